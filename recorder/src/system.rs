//! What a writer's context says about the machine: collected once per process, the way the
//! telemetrics client does, and the machine id (rotating or static).
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::record::MAX_CONTEXT_STRING;

/// Facts about the machine that stay the same for a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// CPU architecture (`std::env::consts::ARCH`).
    pub arch: String,
    /// `sys_vendor|product_name|product_version`, "blank" for each empty or missing part.
    pub host_type: String,
    /// os-release `VERSION_ID` (else `BUILD_ID`, else "blank").
    pub build: String,
    /// os-release `ID` (else "blank").
    pub system_name: String,
    /// Kernel release.
    pub kernel_version: String,
    /// `board_name|board_vendor`.
    pub board_name: String,
    /// CPU model.
    pub cpu_model: String,
    /// BIOS version.
    pub bios_version: String,
    /// Kernel boot id.
    pub boot_id: [u8; 16],
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_CONTEXT_STRING {
        let mut end = MAX_CONTEXT_STRING;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// At most `max` bytes of a text file (lossy UTF-8; empty if unreadable).
fn read_prefix(path: &Path, max: u64) -> String {
    use std::io::Read;
    // Room for a typical file up front: /proc files report size 0, and growing from nothing
    // takes a dozen reads.
    let mut b = Vec::with_capacity(16 << 10);
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(max).read_to_end(&mut b);
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn dmi(root: &Path, name: &str) -> String {
    read_trimmed(&root.join("sys/class/dmi/id").join(name)).unwrap_or_else(|| "blank".into())
}

fn os_release(root: &Path) -> Vec<(String, String)> {
    let text = read_trimmed(&root.join("etc/os-release"))
        .or_else(|| read_trimmed(&root.join("usr/lib/os-release")))
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('"').trim_matches('\'').to_string(),
            )
        })
        .collect()
}

impl SystemInfo {
    /// Collects from the running system, once per process.
    pub fn get() -> Arc<SystemInfo> {
        static INFO: OnceLock<Arc<SystemInfo>> = OnceLock::new();
        INFO.get_or_init(|| Arc::new(SystemInfo::collect_from(Path::new("/"))))
            .clone()
    }

    /// Collects from a tree rooted at `root` (`/` for the real system; tests use a fake).
    pub fn collect_from(root: &Path) -> SystemInfo {
        let os = os_release(root);
        let get = |k: &str| {
            os.iter()
                .find(|(key, v)| key == k && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        // The first 64 KiB: the model is in the first processor's block (on 32-bit ARM the
        // `Hardware` line follows the processors' blocks, a few hundred bytes each). The
        // kernel formats the whole file for a full read, milliseconds on a many-core machine.
        let cpuinfo = read_prefix(&root.join("proc/cpuinfo"), 64 << 10);
        let cpu_model = ["model name", "Hardware", "cpu model", "Processor"]
            .iter()
            .find_map(|key| {
                cpuinfo.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
                })
            })
            .unwrap_or_else(|| "blank".into());
        let mut boot_id = [0u8; 16];
        if let Some(s) = read_trimmed(&root.join("proc/sys/kernel/random/boot_id")) {
            let h: String = s.chars().filter(|c| *c != '-').collect();
            let _ = hex::decode_to_slice(h, &mut boot_id);
        }
        SystemInfo {
            arch: std::env::consts::ARCH.to_string(),
            host_type: clip(format!(
                "{}|{}|{}",
                dmi(root, "sys_vendor"),
                dmi(root, "product_name"),
                dmi(root, "product_version")
            )),
            build: clip(
                get("VERSION_ID")
                    .or_else(|| get("BUILD_ID"))
                    .unwrap_or_else(|| "blank".into()),
            ),
            system_name: clip(get("ID").unwrap_or_else(|| "blank".into())),
            kernel_version: clip(
                read_trimmed(&root.join("proc/sys/kernel/osrelease"))
                    .unwrap_or_else(|| "blank".into()),
            ),
            board_name: clip(format!(
                "{}|{}",
                dmi(root, "board_name"),
                dmi(root, "board_vendor")
            )),
            cpu_model: clip(cpu_model),
            bios_version: clip(dmi(root, "bios_version")),
            boot_id,
        }
    }
}

/// Where the machine id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineId {
    /// The first 32 characters of the static id file.
    Static(String),
    /// sha256 of a local secret and the rotation period number.
    Rotating {
        /// sha256 of the secret.
        secret: [u8; 32],
        /// Rotation period in milliseconds (at least 1).
        period_ms: u64,
    },
}

/// Name of the generated secret file inside `<log dir>/recorder/`.
pub const SECRET_FILE: &str = "machine-secret";

impl MachineId {
    /// Static when `static_file` exists and holds a non-empty id; else rotating, derived from
    /// `secret_file` (or, when that is unreadable, from a random secret created once in
    /// `state_dir`).
    pub fn resolve(
        static_file: &Path,
        secret_file: &Path,
        state_dir: &Path,
        period: Duration,
    ) -> std::io::Result<MachineId> {
        if let Some(s) = read_trimmed(static_file) {
            return Ok(MachineId::Static(s.chars().take(32).collect()));
        }
        let secret = match read_trimmed(secret_file) {
            Some(s) => s.into_bytes(),
            None => load_or_create_secret(&state_dir.join(SECRET_FILE))?,
        };
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
        Ok(MachineId::Rotating {
            secret: Sha256::digest(&secret).into(),
            period_ms,
        })
    }

    /// The id at wall time `wall_ms`, and the wall time at which it changes next.
    pub fn at(&self, wall_ms: i64) -> (String, i64) {
        match self {
            MachineId::Static(s) => (s.clone(), i64::MAX),
            MachineId::Rotating { secret, period_ms } => {
                let p = u64::try_from(wall_ms).unwrap_or(0) / period_ms;
                let mut h = Sha256::new();
                h.update(b"seglog machine id v1\0");
                h.update(secret);
                h.update(p.to_le_bytes());
                let mut id = hex::encode(h.finalize());
                id.truncate(32);
                let next = (p + 1).saturating_mul(*period_ms);
                (id, i64::try_from(next).unwrap_or(i64::MAX))
            }
        }
    }
}

fn load_or_create_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    if let Some(s) = read_trimmed(path) {
        return Ok(s.into_bytes());
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)?;
    let secret = hex::encode(raw);
    let sharing = segment_log::Sharing::of_dir(path.parent().unwrap_or(Path::new(".")))?;
    if sharing.create_file_once(path, secret.as_bytes())? {
        return Ok(secret.into_bytes());
    }
    // Another process created the secret first; theirs wins.
    read_trimmed(path).map(String::into_bytes).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} exists but holds no secret", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn collects_dmi_os_release_kernel_and_cpu_with_blank_for_missing() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "sys/class/dmi/id/sys_vendor", "Acme\n");
        write(r, "sys/class/dmi/id/product_name", "   \n");
        write(r, "sys/class/dmi/id/board_name", "B1\n");
        write(r, "sys/class/dmi/id/bios_version", "2.3\n");
        write(
            r,
            "etc/os-release",
            "NAME=\"Debian\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        write(r, "proc/sys/kernel/osrelease", "6.1.0-test\n");
        write(
            r,
            "proc/cpuinfo",
            "processor : 0\nmodel name\t: Fancy CPU @ 3GHz\n",
        );
        write(
            r,
            "proc/sys/kernel/random/boot_id",
            "01234567-89ab-cdef-0123-456789abcdef\n",
        );
        let s = SystemInfo::collect_from(r);
        assert_eq!(s.host_type, "Acme|blank|blank");
        assert_eq!(s.board_name, "B1|blank");
        assert_eq!(s.bios_version, "2.3");
        assert_eq!((s.system_name.as_str(), s.build.as_str()), ("debian", "12"));
        assert_eq!(s.kernel_version, "6.1.0-test");
        assert_eq!(s.cpu_model, "Fancy CPU @ 3GHz");
        assert_eq!(hex::encode(s.boot_id), "0123456789abcdef0123456789abcdef");
        let empty = SystemInfo::collect_from(&r.join("nothing"));
        assert_eq!(empty.host_type, "blank|blank|blank");
        assert_eq!(empty.cpu_model, "blank");
    }

    #[test]
    fn static_machine_id_is_the_first_32_characters_of_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("static");
        std::fs::write(&f, "my-machine-name-that-is-much-longer-than-32-chars\n").unwrap();
        let m = MachineId::resolve(
            &f,
            Path::new("/nonexistent"),
            d.path(),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            m.at(0),
            ("my-machine-name-that-is-much-lon".to_string(), i64::MAX)
        );
    }

    #[test]
    fn rotating_machine_id_changes_each_period_and_is_stable_within_one() {
        let d = tempfile::tempdir().unwrap();
        let period = Duration::from_secs(3 * 86_400);
        let m = MachineId::resolve(
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
            d.path(),
            period,
        )
        .unwrap();
        let again = MachineId::resolve(
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
            d.path(),
            period,
        )
        .unwrap();
        assert_eq!(m, again, "the generated secret is kept");
        let p = 3 * 86_400_000i64;
        let (a, next) = m.at(10 * p + 5);
        assert_eq!(a.len(), 32);
        assert_eq!(next, 11 * p);
        assert_eq!(m.at(11 * p - 1).0, a);
        assert_ne!(m.at(11 * p).0, a);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(d.path().join(SECRET_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
