//! Network namespaces, topology discovery, live capture and pcapng writing.
