//! Faults made with the machine's own means rather than a proxy: a full file system (a small
//! tmpfs), a memory limit (a cgroup), a stepped wall clock (libfaketime); and reading a node's
//! metrics to see what a fault did inside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A tmpfs of a few KiB mounted over a folder and filled, so every write in it fails with
/// `ENOSPC`; unmounted when dropped. Needs root (or `CAP_SYS_ADMIN`).
pub struct FullDisk {
    path: PathBuf,
}

/// The size of the full file system.
const FULL_DISK_SIZE: &str = "64k";

impl FullDisk {
    pub fn mount(path: &Path) -> anyhow::Result<FullDisk> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={FULL_DISK_SIZE},mode=0700"))
            .arg("bulwark-chaos-full")
            .arg(path)
            .output()
            .context("failed to run mount")?;
        if !output.status.success() {
            bail!(
                "could not mount a {FULL_DISK_SIZE} tmpfs at {} (the scenario needs root or \
                 CAP_SYS_ADMIN): {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let full_disk = FullDisk {
            path: path.to_path_buf(),
        };
        full_disk.fill()?;
        Ok(full_disk)
    }

    /// Writes a filler file until the file system refuses more.
    fn fill(&self) -> anyhow::Result<()> {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler)
            .with_context(|| format!("failed to create {}", filler.display()))?;
        let block = [0u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::StorageFull => return Ok(()),
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("failed to fill {}", filler.display()));
                }
            }
        }
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg("--lazy")
            .arg(&self.path)
            .status();
        if !unmounted.is_ok_and(|status| status.success()) {
            eprintln!("warning: failed to unmount {}", self.path.display());
        }
    }
}

/// Which cgroup hierarchy holds the memory controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CgroupVersion {
    /// cgroup v2: `memory.max`, `memory.events`.
    V2,
    /// cgroup v1's `memory` hierarchy: `memory.limit_in_bytes`, `memory.oom_control`.
    V1,
}

/// A process confined to a memory cgroup of its own until [`MemoryCgroup::release`].
pub struct MemoryCgroup {
    version: CgroupVersion,
    dir: PathBuf,
    /// The cgroup the process came from, where it goes back.
    home: PathBuf,
    pid: u32,
    pub limit_bytes: u64,
    /// Whether the pages it held came along (else only pages it touches from now on count).
    charges_moved: bool,
}

impl MemoryCgroup {
    /// Moves `pid` into a new memory cgroup limited to its resident size plus `headroom_mib`
    /// (to `headroom_mib` of new pages where the kernel cannot move its pages along).
    pub fn confine(pid: u32, headroom_mib: u64) -> anyhow::Result<MemoryCgroup> {
        let (version, root) = memory_hierarchy()?;
        let home = root.join(own_cgroup(pid, version)?.trim_start_matches('/'));
        let dir = root.join(format!("bulwark-chaos-{pid}"));
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "failed to create the cgroup {} (the scenario needs a writable cgroup file system)",
                dir.display()
            )
        })?;
        // Its pages should come along, so the limit bounds what it already holds plus the
        // headroom; cgroup v2 and recent kernels' v1 cannot move charges, and then only pages it
        // touches from now on count, so the limit is the headroom alone.
        let charges_moved = version == CgroupVersion::V1
            && write(&dir.join("memory.move_charge_at_immigrate"), "3").is_ok();
        let headroom_bytes = headroom_mib * 1024 * 1024;
        let limit_bytes = if charges_moved {
            resident_bytes(pid)? + headroom_bytes
        } else {
            headroom_bytes
        };
        let limit_file = match version {
            CgroupVersion::V2 => "memory.max",
            CgroupVersion::V1 => "memory.limit_in_bytes",
        };
        let moved = write(&dir.join(limit_file), &limit_bytes.to_string())
            .and_then(|()| write(&dir.join("cgroup.procs"), &pid.to_string()));
        if let Err(error) = moved {
            let _ = std::fs::remove_dir(&dir);
            return Err(error);
        }
        Ok(MemoryCgroup {
            version,
            dir,
            home,
            pid,
            limit_bytes,
            charges_moved,
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "cgroup {:?} at {}, {}",
            self.version,
            self.dir.display(),
            if self.charges_moved {
                "its pages moved along"
            } else {
                "only pages it touches from now on count: the kernel cannot move charges"
            }
        )
    }

    /// Moves the process back (if it lives), removes the cgroup and says what the kernel did
    /// meanwhile (limit hits, processes killed).
    pub fn release(self) -> String {
        let (hits_file, kills_key) = match self.version {
            CgroupVersion::V2 => ("memory.events", "oom_kill"),
            CgroupVersion::V1 => ("memory.oom_control", "oom_kill"),
        };
        let events = std::fs::read_to_string(self.dir.join(hits_file)).unwrap_or_default();
        let num_killed = events
            .lines()
            .find_map(|line| line.strip_prefix(kills_key)?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let num_limit_hits = match self.version {
            CgroupVersion::V1 => std::fs::read_to_string(self.dir.join("memory.failcnt"))
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .unwrap_or(0),
            CgroupVersion::V2 => events
                .lines()
                .find_map(|line| line.strip_prefix("max")?.trim().parse::<u64>().ok())
                .unwrap_or(0),
        };
        let _ = write(&self.home.join("cgroup.procs"), &self.pid.to_string());
        if let Err(error) = std::fs::remove_dir(&self.dir) {
            eprintln!("warning: failed to remove {}: {error}", self.dir.display());
        }
        format!(
            "memory limit hit {num_limit_hits} times, {num_killed} processes killed by the kernel"
        )
    }
}

/// Finds the hierarchy with the memory controller: cgroup v2 when its root lists `memory`, else
/// v1's `memory` hierarchy.
fn memory_hierarchy() -> anyhow::Result<(CgroupVersion, PathBuf)> {
    let unified = Path::new("/sys/fs/cgroup");
    if std::fs::read_to_string(unified.join("cgroup.controllers"))
        .is_ok_and(|controllers| controllers.split_whitespace().any(|name| name == "memory"))
    {
        return Ok((CgroupVersion::V2, unified.to_path_buf()));
    }
    let v1 = unified.join("memory");
    if v1.join("cgroup.procs").exists() {
        return Ok((CgroupVersion::V1, v1));
    }
    bail!("no cgroup memory controller is mounted under /sys/fs/cgroup")
}

/// Returns the process's cgroup path in the hierarchy of `version`.
fn own_cgroup(pid: u32, version: CgroupVersion) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("failed to read the cgroups of process {pid}"))?;
    text.lines()
        .find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let matches = match version {
                CgroupVersion::V2 => controllers.is_empty(),
                CgroupVersion::V1 => controllers.split(',').any(|name| name == "memory"),
            };
            matches.then(|| path.to_owned())
        })
        .with_context(|| format!("process {pid} is in no {version:?} memory cgroup"))
}

fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("failed to read the status of process {pid}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .with_context(|| format!("process {pid} reports no VmRSS"))
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value)
        .with_context(|| format!("failed to write {value} to {}", path.display()))
}

/// Returns the libfaketime library to preload (the multi-threaded build), from the Debian
/// package `faketime` or `CHAOS_LIBFAKETIME`.
pub fn libfaketime() -> anyhow::Result<PathBuf> {
    let candidates = std::env::var_os("CHAOS_LIBFAKETIME")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
                "/usr/lib/faketime/libfaketimeMT.so.1",
            ]
            .map(PathBuf::from),
        );
    for candidate in candidates {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "the clock-jump scenario needs libfaketime (Debian package `faketime`, installed by \
         `make gameday`) or CHAOS_LIBFAKETIME naming libfaketimeMT.so.1"
    )
}

/// Reads a node's `/metrics` (with the admin key) and returns the sum of each named metric's
/// series (0 for a metric it does not show).
pub async fn scrape(
    client: &reqwest::Client,
    node_url: &str,
    names: &[&str],
) -> anyhow::Result<Vec<f64>> {
    let response = client
        .get(format!("{node_url}/metrics"))
        .bearer_auth(crate::cluster::ADMIN_KEY)
        .send()
        .await
        .with_context(|| format!("{node_url}/metrics did not answer"))?;
    if !response.status().is_success() {
        bail!("{node_url}/metrics answered {}", response.status());
    }
    let text = response.text().await?;
    Ok(names
        .iter()
        .map(|name| {
            text.lines()
                .filter(|line| {
                    line.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with([' ', '{']))
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .collect())
}
