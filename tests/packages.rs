//! Checks the OpenWrt packages built by `scripts/build-packages.sh` (tests/setup.sh runs
//! it): unpacks each .ipk, checks its control fields and paths, and runs the foreign
//! binary it carries under qemu-user-static (`csipd version`, `csipd check-config` with
//! the default config from the same package, and `csipd demo`/`fleet` refused: the
//! packages are built without the `lab` feature).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn packages_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/packages")
}

fn run(cmd: &mut Command) -> std::process::Output {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Unpacks an ipk (outer tar.gz of debian-binary, control.tar.gz, data.tar.gz) into
/// `dir/control` and `dir/data`.
fn unpack(ipk: &Path, dir: &Path) {
    let outer = dir.join("outer");
    for sub in ["outer", "control", "data"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    run(Command::new("tar")
        .arg("-xzf")
        .arg(ipk)
        .arg("-C")
        .arg(&outer));
    let debian_binary = fs::read_to_string(outer.join("debian-binary")).unwrap();
    assert_eq!(
        debian_binary.trim(),
        "2.0",
        "{}: debian-binary",
        ipk.display()
    );
    for part in ["control", "data"] {
        run(Command::new("tar")
            .arg("-xzf")
            .arg(outer.join(format!("{part}.tar.gz")))
            .arg("-C")
            .arg(dir.join(part)));
    }
}

fn control_fields(control: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(control.join("control")).unwrap();
    text.lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Bytes of every regular file under `dir` (what Installed-Size must state).
fn installed_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        if meta.is_dir() {
            total += installed_bytes(&entry.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn csipd_ipks() -> Vec<PathBuf> {
    let dir = packages_dir();
    let mut found = Vec::new();
    if let Ok(arches) = fs::read_dir(&dir) {
        for arch in arches.flatten() {
            if !arch.path().is_dir() {
                continue;
            }
            for file in fs::read_dir(arch.path()).unwrap().flatten() {
                let name = file.file_name().to_string_lossy().to_string();
                if name.starts_with("csipd_") && name.ends_with(".ipk") {
                    found.push(file.path());
                }
            }
        }
    }
    found.sort();
    found
}

fn qemu_for(arch: &str) -> &'static str {
    if arch.starts_with("aarch64") {
        "qemu-aarch64-static"
    } else if arch.starts_with("mipsel") {
        "qemu-mipsel-static"
    } else if arch.starts_with("arm") {
        "qemu-arm-static"
    } else if arch == "x86_64" {
        // `bash scripts/build-packages.sh x86_64` (the size measurements) builds one too.
        "qemu-x86_64-static"
    } else {
        panic!("no qemu-user emulator known for package architecture {arch}")
    }
}

#[test]
fn csipd_ipks_have_right_control_fields_paths_and_run_under_qemu() {
    let ipks = csipd_ipks();
    let arches: Vec<String> = ipks
        .iter()
        .map(|p| {
            p.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    for wanted in ["aarch64", "mipsel"] {
        assert!(
            arches.iter().any(|a| a.starts_with(wanted)),
            "no {wanted} csipd .ipk under {}: run `bash scripts/build-packages.sh aarch64 mipsel` \
             (tests/setup.sh does)",
            packages_dir().display()
        );
    }
    for (ipk, arch) in ipks.iter().zip(&arches) {
        let tmp = tempdir(&format!("ipk-{arch}"));
        unpack(ipk, &tmp);
        let control = tmp.join("control");
        let data = tmp.join("data");
        let fields = control_fields(&control);
        assert_eq!(fields["Package"], "csipd");
        assert_eq!(fields["Version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(&fields["Architecture"], arch);
        assert!(
            fields["Depends"].contains("libc"),
            "Depends: {}",
            fields["Depends"]
        );
        assert!(!fields["Description"].is_empty());
        let installed: u64 = fields["Installed-Size"].parse().unwrap();
        assert_eq!(
            installed,
            installed_bytes(&data),
            "{}: Installed-Size",
            ipk.display()
        );

        let conffiles = fs::read_to_string(control.join("conffiles")).unwrap();
        assert_eq!(conffiles.trim(), "/etc/config/csipd");
        for script in ["postinst", "prerm"] {
            let path = control.join(script);
            assert_eq!(mode(&path) & 0o111, 0o111, "{script} must be executable");
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("#!/bin/sh"), "{script}: {text}");
            assert!(
                text.contains("IPKG_INSTROOT"),
                "{script} must skip image builds"
            );
        }
        let postinst = fs::read_to_string(control.join("postinst")).unwrap();
        assert!(postinst.contains("/etc/init.d/csipd enable"));
        assert!(postinst.contains("rpcd reload"));

        // opkg unpacks data.tar.gz over /: every directory entry must be 0755 root.
        let listing = run(Command::new("tar")
            .arg("-tvzf")
            .arg(tmp.join("outer/data.tar.gz")));
        for line in String::from_utf8_lossy(&listing.stdout).lines() {
            if line.starts_with('d') {
                assert!(
                    line.starts_with("drwxr-xr-x root/root") || line.starts_with("drwxr-xr-x 0/0"),
                    "{line}"
                );
            }
        }

        let binary = data.join("usr/bin/csipd");
        assert_eq!(mode(&binary), 0o755);
        assert_eq!(mode(&data.join("etc/init.d/csipd")), 0o755);
        let init = fs::read_to_string(data.join("etc/init.d/csipd")).unwrap();
        assert!(init.contains("USE_PROCD=1") && init.contains("procd_add_reload_trigger csipd"));
        let config = data.join("etc/config/csipd");
        assert!(config.is_file());
        let plugin = data.join("usr/libexec/rpcd/csipd");
        assert!(
            fs::symlink_metadata(&plugin).is_ok(),
            "rpcd plugin missing at /usr/libexec/rpcd/csipd"
        );

        // The foreign binary runs: version and the packaged default config.
        let qemu = qemu_for(arch);
        let version = run(Command::new(qemu).arg(&binary).arg("version"));
        assert_eq!(
            String::from_utf8_lossy(&version.stdout).trim(),
            format!("csipd {}", env!("CARGO_PKG_VERSION"))
        );
        run(Command::new(qemu)
            .arg(&binary)
            .arg("check-config")
            .arg(&config));
        // OpenSSL works in the foreign binary: a key, a CSR (SHA-256 signature: the
        // MIPS assembler's SHA-256 crashed here), a self-signed certificate whose dates
        // come back as set (a time_t handed across the FFI was garbled on mipsel).
        let key = tmp.join("device.key");
        let cert = tmp.join("device.pem");
        run(Command::new(qemu)
            .arg(&binary)
            .args(["cert", "request", "--cn", "pkg-test", "--key"])
            .arg(&key)
            .arg("--csr")
            .arg(tmp.join("device.csr")));
        run(Command::new(qemu)
            .arg(&binary)
            .args([
                "cert",
                "selfsigned",
                "--cn",
                "pkg-test",
                "--days",
                "400",
                "--key",
            ])
            .arg(&key)
            .arg("--cert")
            .arg(&cert));
        let show = run(Command::new(qemu)
            .arg(&binary)
            .args(["cert", "show", "--cert"])
            .arg(&cert)
            .arg("--key")
            .arg(&key));
        let show = String::from_utf8_lossy(&show.stdout);
        assert!(
            show.contains("CN=pkg-test")
                && show.contains("valid until:")
                && show.contains("key matches: yes"),
            "{show}"
        );

        // Router packages leave the lab tools out (no `lab` feature) and say which
        // build has them.
        for lab_command in ["demo", "fleet"] {
            let out = Command::new(qemu)
                .arg(&binary)
                .arg(lab_command)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {qemu}: {e}"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "csipd {lab_command}: {stderr}");
            assert!(
                stderr.contains(&format!("csipd {lab_command}: not in this build"))
                    && stderr.contains("--features lab"),
                "csipd {lab_command}: {stderr}"
            );
        }
        let _ = fs::remove_dir_all(&tmp);
    }
}

#[test]
fn luci_ipk_carries_views_menu_and_acl() {
    let dir = packages_dir();
    let ipk = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run bash scripts/build-packages.sh", dir.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("luci-app-csipd_"))
        })
        .expect("no luci-app-csipd .ipk: run bash scripts/build-packages.sh");
    let tmp = tempdir("ipk-luci");
    unpack(&ipk, &tmp);
    let fields = control_fields(&tmp.join("control"));
    assert_eq!(fields["Package"], "luci-app-csipd");
    assert_eq!(fields["Architecture"], "all");
    assert!(fields["Depends"].contains("csipd") && fields["Depends"].contains("luci-base"));
    let data = tmp.join("data");
    assert_eq!(
        fields["Installed-Size"].parse::<u64>().unwrap(),
        installed_bytes(&data)
    );
    assert!(
        data.join("usr/share/luci/menu.d/luci-app-csipd.json")
            .is_file()
    );
    assert!(
        data.join("usr/share/rpcd/acl.d/luci-app-csipd.json")
            .is_file()
    );
    let views = data.join("www/luci-static/resources/view/csipd");
    assert!(views.join("status.js").is_file(), "{}", views.display());
    let _ = fs::remove_dir_all(&tmp);
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("csipd-test-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs files/etc/init.d/csipd `action` the way /etc/rc.common does (`start` runs
/// start_service, `reload` runs reload_service), with a procd stand-in that records what
/// the script asks of procd: procd itself is not installable here. The stand-in's
/// procd_running answers from a state file the test sets, as procd's service list would.
fn init_script(dir: &Path, action: &str) -> (bool, String) {
    let script = format!(
        r#"
D='{dir}'
procd_open_instance() {{ echo "open $1" >> "$D/procd.log"; }}
procd_set_param() {{ [ "$1" = command ] && {{ shift; echo "command $*" >> "$D/procd.log"; }}; return 0; }}
procd_close_instance() {{ echo running > "$D/state"; echo close >> "$D/procd.log"; }}
procd_send_signal() {{ echo "signal $*" >> "$D/procd.log"; }}
procd_running() {{ [ "$1 $2" = "csipd csipd" ] && [ "$(cat "$D/state" 2>/dev/null)" = running ]; }}
procd_add_reload_trigger() {{ :; }}
logger() {{
	msg=""
	while [ $# -gt 0 ]; do case "$1" in -t|-p) shift 2;; *) msg="$msg$1"; shift;; esac; done
	if [ -n "$msg" ]; then echo "$msg" >> "$D/syslog"; else cat >> "$D/syslog"; fi
}}
start() {{ start_service "$@"; }}
reload() {{ reload_service "$@"; }}
. '{init}'
{action}
"#,
        dir = dir.display(),
        init = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("files/etc/init.d/csipd")
            .display(),
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("CSIPD_BIN", env!("CARGO_BIN_EXE_csipd"))
        .env("CSIPD_CONFIG", dir.join("csipd"))
        .env("CSIPD_LAST_GOOD", dir.join("data/last-good.conf"))
        .env("CSIPD_ACTIVE", dir.join("active"))
        .output()
        .expect("sh runs");
    let log = fs::read_to_string(dir.join("procd.log")).unwrap_or_default();
    let _ = fs::remove_file(dir.join("procd.log"));
    (
        out.status.success(),
        format!("{log}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn init_script_keeps_the_site_controlled_and_reload_starts_a_stopped_csipd() {
    let dir = tempdir("initd");
    let config = dir.join("csipd");
    let good = "config control 'site'\n\toption cycle_s '1'\n\toption meter_stale_s '10'\n";
    let broken = good.replace("'10'", "'0.5'");
    let bin = env!("CARGO_BIN_EXE_csipd");

    // Fresh install, no good copy yet, broken config: refuses, says why.
    fs::write(&config, &broken).unwrap();
    let (ok, log) = init_script(&dir, "start");
    assert!(!ok && !log.contains("command"), "{log}");
    assert!(log.contains("no last good configuration"), "{log}");
    assert!(
        fs::read_to_string(dir.join("syslog"))
            .unwrap()
            .contains("meter_stale_s")
    );

    // A good config starts csipd with it and becomes the last good copy (private).
    fs::write(&config, good).unwrap();
    let (ok, log) = init_script(&dir, "start");
    assert!(ok, "{log}");
    assert!(
        log.contains(&format!("command {bin} run --config {}", config.display())),
        "{log}"
    );
    let last_good = dir.join("data/last-good.conf");
    assert_eq!(fs::read_to_string(&last_good).unwrap(), good);
    assert_eq!(
        mode(&last_good) & 0o077,
        0,
        "the copy may hold an API token"
    );

    // Running: a good change is a SIGHUP, not a restart.
    let changed = good.replace("'1'", "'2'").replace("'10'", "'20'");
    fs::write(&config, &changed).unwrap();
    let (ok, log) = init_script(&dir, "reload");
    assert!(ok, "{log}");
    assert_eq!(log.trim(), "signal csipd csipd HUP");
    assert_eq!(fs::read_to_string(&last_good).unwrap(), changed);

    // Running: a bad save is refused and the daemon keeps what it runs.
    fs::write(&config, &broken).unwrap();
    let (ok, log) = init_script(&dir, "reload");
    assert!(!ok, "{log}");
    assert!(
        log.contains("keeping the running configuration") && !log.contains("signal"),
        "{log}"
    );

    // The router restarts with the bad config: csipd runs the last good copy.
    fs::remove_file(dir.join("state")).unwrap();
    let (ok, log) = init_script(&dir, "start");
    assert!(ok, "{log}");
    assert!(
        log.contains(&format!("run --config {}", last_good.display())),
        "{log}"
    );
    let chosen = Command::new(bin)
        .arg("check-config")
        .arg(&last_good)
        .output()
        .unwrap();
    assert!(
        chosen.status.success(),
        "the file csipd runs passes check-config"
    );

    // csipd stopped (e.g. killed), config fixed in LuCI, Save & Apply: procd's reload
    // trigger starts it rather than signalling nothing.
    fs::remove_file(dir.join("state")).unwrap();
    fs::write(&config, good).unwrap();
    let (ok, log) = init_script(&dir, "reload");
    assert!(ok, "{log}");
    assert!(
        log.contains(&format!("command {bin} run --config {}", config.display())),
        "{log}"
    );
    assert!(!log.contains("signal"), "{log}");

    // Running the last good copy when the config is fixed: restarted with the config.
    fs::write(&config, &broken).unwrap();
    fs::remove_file(dir.join("state")).unwrap();
    assert!(init_script(&dir, "start").0);
    fs::write(&config, good).unwrap();
    let (ok, log) = init_script(&dir, "reload");
    assert!(ok, "{log}");
    assert!(
        log.contains(&format!("run --config {}", config.display())),
        "{log}"
    );
    let _ = fs::remove_dir_all(&dir);
}
