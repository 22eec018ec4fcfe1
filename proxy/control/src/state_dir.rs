//! Last good snapshots on disk, so a proxy restarted while the control plane
//! is down starts with the policy it had. One file per subscription, written
//! to a temporary name and renamed (never half a file).

use std::path::Path;

use outrigger_api::stream::{Snapshot, Subscription};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Serialize, Deserialize)]
struct Persisted {
    subscription: Subscription,
    snapshot: Snapshot,
}

fn file_name(subscription: &Subscription) -> String {
    let digest = Sha256::digest(subscription.key().as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("snapshot-{hex}.json")
}

pub fn save(dir: &Path, subscription: &Subscription, snapshot: &Snapshot) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let body = serde_json::to_vec(&Persisted {
        subscription: subscription.clone(),
        snapshot: snapshot.clone(),
    })?;
    let path = dir.join(file_name(subscription));
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, body)?;
    std::fs::rename(&temp, &path)
}

/// Every readable snapshot in `dir`; unreadable files are logged and skipped.
pub fn load(dir: &Path) -> Vec<(Subscription, Snapshot)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            let parsed = std::fs::read(e.path())
                .map_err(|err| err.to_string())
                .and_then(|bytes| serde_json::from_slice::<Persisted>(&bytes).map_err(|err| err.to_string()));
            match parsed {
                Ok(p) => Some((p.subscription, p.snapshot)),
                Err(err) => {
                    tracing::warn!(file = %e.path().display(), error = %err, "skipping a persisted snapshot");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_skip_garbage() {
        let dir = std::env::temp_dir().join(format!("outrigger-state-{}", std::process::id()));
        let sub = Subscription::Destination("web.shop:80".into());
        save(
            &dir,
            &sub,
            &Snapshot {
                version: 9,
                destination: None,
            },
        )
        .unwrap();
        std::fs::write(dir.join("garbage.json"), "{").unwrap();
        let loaded = load(&dir);
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0, sub);
        assert_eq!(loaded[0].1.version, 9);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
