//! Route lookups on demand. The core asks the snapshot; what the snapshot cannot answer is
//! noted, asked of the system once through the seam, and the question is asked again. A trace
//! that was answered needs no route at all; a dropped probe needs the one route of the
//! namespace it vanished in. A replay asks the same questions in the same order, so the
//! recorded answers fit.

use crate::seam::{Network, SeamError};
use crate::snapshot::Snapshot;

/// Runs `f` over the snapshot; if it asked for routes the snapshot lacked, looks them up
/// through `net` and runs `f` again with the answers.
pub fn answering<T>(
    snapshot: &mut Snapshot,
    net: &mut dyn Network,
    f: impl Fn(&Snapshot) -> T,
) -> Result<T, SeamError> {
    snapshot.take_misses();
    let mut answer = f(snapshot);
    // A question may follow from an answer (the next router on an underlay walk): ask again
    // while new questions come up, a few rounds at most.
    let mut asked: Vec<(String, std::net::IpAddr)> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let missing: Vec<_> = snapshot
            .take_misses()
            .into_iter()
            .filter(|q| !asked.contains(q))
            .collect();
        if missing.is_empty() {
            break;
        }
        asked.extend(missing.iter().cloned());
        let found = net.routes(&missing)?;
        snapshot.add_lookups(found);
        answer = f(snapshot);
    }
    // What the system could not answer either stays unanswered.
    snapshot.take_misses();
    Ok(answer)
}

/// Rounds of lookups one question may lead to.
const MAX_ROUNDS: usize = 4;
