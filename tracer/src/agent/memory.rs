//! Giving memory back between sessions. A capture session with rule and drop tracing builds
//! large short-lived structures (the kernel's BTF parsed for the eBPF program, capture
//! rings' bookkeeping, netlink dumps) on tokio's blocking threads; glibc keeps what those
//! threads freed in per-thread arenas, so an idle agent held 100–200 MiB after a few traces —
//! close to the DaemonSet's memory limit — although it used 11 MiB before the first.

/// Returns the heap's free pages to the kernel (all arenas), once a session has ended.
pub fn give_back() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only walks glibc's own arenas under their locks and madvises
        // free pages away; it takes no pointer from us and is safe to call from any thread.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
