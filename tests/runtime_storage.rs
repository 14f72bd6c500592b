//! Import limits through a storage inverter's charge limit: `csipd run` against csipd's
//! simulated site at night (`csipd demo --sim-only --battery --sun-w 0`: no sun, the
//! load stepping through 600/2400/1100/300 W every 40 s, and a battery inverter with
//! SunSpec model 124 that wants to charge at 3 kW from the grid).
//! - without the battery configured, a fixed 2000 W import limit is in force but shown
//!   as unsupported, and the site imports load + 3 kW;
//! - with it configured as `role storage`, csipd writes the battery's charge limit
//!   (InWRte, StorCtl_Mod) so the import stays at the limit while the battery still
//!   charges with what is left.

mod runtime_common;

use csipd::status::{LimitMode, Snapshot};
use runtime_common::*;
use std::time::{Duration, Instant};

const IMPORT_LIMIT_W: f64 = 2000.0;

fn config_text(data: &str, inverter_port: &str, meter_port: &str, battery: bool) -> String {
    let mut text = format!(
        "config csipd 'main'
\toption status_listen '127.0.0.1:0'
\toption data_dir '{data}/state'
\toption telemetry_dir '{data}/telemetry'

config limits 'fixed'
\toption import_limit_w '{IMPORT_LIMIT_W}'

config control 'site'
\toption cycle_s '1'
\toption meter_stale_s '5'
"
    );
    text.push_str(&uci_tcp_device("pv", "inverter", inverter_port, 1));
    text.push_str(&uci_tcp_device("meter", "meter", meter_port, 1));
    if battery {
        text.push_str(&uci_tcp_device("battery", "storage", inverter_port, 2));
    }
    text
}

fn import_limit(s: &Snapshot) -> Option<(f64, bool)> {
    let l = s.limit(LimitMode::Import)?;
    Some((l.value_w?, l.unsupported))
}

/// The battery's output as read (negative while charging).
fn battery_w(s: &Snapshot) -> Option<f64> {
    s.devices
        .iter()
        .find(|d| d.name == "battery")
        .and_then(|d| d.readings.w)
}

#[test]
fn an_import_limit_acts_through_the_battery_charge_limit() {
    let mut sim = spawn(&[
        "demo",
        "--sim-only",
        "--battery",
        "--sun-w",
        "0",
        "--seconds",
        "600",
    ]);
    let inverter_port = port_of(&sim.stdout_line("inverter: ", PATIENCE));
    let meter_port = port_of(&sim.stdout_line("meter: ", PATIENCE));
    let battery_line = sim.stdout_line("battery: ", PATIENCE);
    assert!(battery_line.ends_with("unit 2"), "{battery_line}");
    let dir = temp_dir("runtime-storage");
    let data = dir.display().to_string();
    let path = dir.join("csipd").display().to_string();

    // 1. No storage configured: the limit is shown, flagged unsupported, and exceeded.
    std::fs::write(
        &path,
        config_text(&data, &inverter_port, &meter_port, false),
    )
    .unwrap();
    let (mut run, url) = start_run(&path);
    let s = wait_for(
        &url,
        Duration::from_secs(30),
        "import above the limit",
        |s| import_limit(s).is_some() && s.site.site_w.is_some_and(|w| w > IMPORT_LIMIT_W + 500.0),
    );
    assert_eq!(
        import_limit(&s),
        Some((IMPORT_LIMIT_W, true)),
        "{:?}",
        s.limits
    );
    assert!(s.setpoints.iter().all(|p| p.charge_limit_w.is_none()));
    assert_eq!(run.terminate(), Some(0));

    // 2. The battery as a storage device: its charge is limited to what the import
    //    limit leaves.
    std::fs::write(&path, config_text(&data, &inverter_port, &meter_port, true)).unwrap();
    let (mut run, url) = start_run(&path);
    wait_for(
        &url,
        Duration::from_secs(30),
        "a charge limit written",
        |s| {
            s.setpoints
                .iter()
                .any(|p| p.device == "battery" && p.charge_limit_w.is_some())
        },
    );
    let s = status(&url);
    assert_eq!(
        import_limit(&s),
        Some((IMPORT_LIMIT_W, false)),
        "{:?}",
        s.limits
    );

    // The import stays at the limit while the battery charges with what is left. A
    // sample is within the band when the import is at most max(2 %, 100 W) over the
    // limit, or the battery charges by no more than that (with the battery at zero the
    // 2400 W load alone is above the limit: nothing is left to curtail). Each check
    // waits for its condition (issue 26): how fast the loop settles in real time depends
    // on the machine; cycle-by-cycle quality is the closed-loop tests' job, on a
    // virtual clock.
    let tolerance = tolerance_w(IMPORT_LIMIT_W);
    let in_band = |s: &Snapshot| match (s.site.site_w, battery_w(s)) {
        (Some(site_w), Some(bat_w)) => {
            site_w <= IMPORT_LIMIT_W + tolerance || (-bat_w).max(0.0) <= tolerance
        }
        _ => false,
    };
    // Charging, but less than the 3 kW it wants: limited, not just stopped.
    let partly_charging = |s: &Snapshot| {
        in_band(s)
            && battery_w(s).is_some_and(|w| {
                let charging_w = (-w).max(0.0);
                charging_w > 200.0 && charging_w < 2800.0
            })
    };
    // The household load: site + battery output (no sun).
    let household_w = |s: &Snapshot| Some(s.site.site_w? + battery_w(s)?);
    let show = |what: &str, s: &Snapshot| {
        println!(
            "{what}: site {:?} W, battery {:?} W, household {:?} W",
            s.site.site_w,
            battery_w(s),
            household_w(s)
        )
    };
    let began = Instant::now();
    let s = wait_for(
        &url,
        Duration::from_secs(90),
        "the battery charging partly with the import in the band",
        partly_charging,
    );
    show("partly charging", &s);
    // The 2400 W phase (once per 160 s profile): the load alone is over the limit, so
    // the charge must go to zero, and the import is what the load draws.
    let s = wait_for(
        &url,
        Duration::from_secs(180),
        "the load alone over the limit and the battery no longer charging",
        |s| {
            household_w(s).is_some_and(|h| h > IMPORT_LIMIT_W + tolerance)
                && battery_w(s).is_some_and(|w| -w <= tolerance)
        },
    );
    show("load over the limit", &s);
    // And when the load falls again, the battery charges again with what is left.
    let s = wait_for(
        &url,
        Duration::from_secs(90),
        "the battery charging partly again after the load fell",
        |s| partly_charging(s) && household_w(s).is_some_and(|h| h < IMPORT_LIMIT_W),
    );
    show("partly charging again", &s);
    println!(
        "import limit held through the load phases in {:?}",
        began.elapsed()
    );
    assert_eq!(run.terminate(), Some(0));
    assert_eq!(sim.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
