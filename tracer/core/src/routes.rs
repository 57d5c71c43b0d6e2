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
    let first = f(snapshot);
    let missing = snapshot.take_misses();
    if missing.is_empty() {
        return Ok(first);
    }
    let found = net.routes(&missing)?;
    snapshot.add_lookups(found);
    let again = f(snapshot);
    // What the system could not answer either stays unanswered: no second round.
    snapshot.take_misses();
    Ok(again)
}
