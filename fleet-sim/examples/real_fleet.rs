//! The scaled-down real run (`fleet_sim::real`): real uploader engines over real logs in one
//! process against the real collector on 127.0.0.1, with an outage and 429 shedding.
//!
//! ```sh
//! cargo run --release -p fleet-sim --example real_fleet -- [DEVICES] [OUTAGE_SECS] [OUT.svg]
//! ```
//!
//! Defaults: 500 devices writing 5 records/s each (2,500 records/s in all), a 10 s policy interval (a device's
//! 15 minutes, scaled by 1/90), backoff 0.1 s to 26.7 s (the default 40-minute cap scaled
//! alike), a 256 KiB write queue, 40 s steady, a 30 s outage. Prints the
//! request rate per second and the figures; exit 0 when everything written arrived exactly
//! once and the backlog drained, 1 when not, 2 on bad arguments or a failed setup.

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| -> Result<u64, String> {
        args.get(i).map_or(Ok(d), |a| {
            a.parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("argument {} must be a positive number, not {a:?}", i + 1))
        })
    };
    let (devices, outage) = match (num(0, 500), num(1, 30)) {
        (Ok(d), Ok(o)) => (d, o),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("real_fleet: {e}\nusage: real_fleet [DEVICES] [OUTAGE_SECS] [OUT.svg]");
            return ExitCode::from(2);
        }
    };
    let p = fleet_sim::real::RealParams {
        devices: u32::try_from(devices).unwrap_or(u32::MAX),
        records_per_sec: 5,
        interval: Duration::from_secs(10),
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(26_667),
        queue_bytes: 256 << 10,
        steady: Duration::from_secs(40),
        outage: Duration::from_secs(outage),
        max_after: Duration::from_secs(300),
        tail: Duration::from_secs(20),
    };
    let r = match fleet_sim::real::run(&p) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("real_fleet: {e:#}");
            return ExitCode::from(2);
        }
    };
    let (down, up) = r.outage_secs;
    println!("second  requests  429  unanswered");
    for (s, n) in r.requests_per_sec.iter().enumerate() {
        let mark = if s == down {
            "  <- collector stopped"
        } else if s == up {
            "  <- collector started"
        } else {
            ""
        };
        println!(
            "{s:6}  {n:8}  {:3}  {:10}{mark}",
            r.shed_per_sec[s], r.unanswered_per_sec[s]
        );
    }
    println!(
        "{} devices, {} records/s each, interval {:?}, backoff {:?}..{:?}, write queue {} bytes, outage {} s",
        p.devices, p.records_per_sec, p.interval, p.backoff_base, p.backoff_cap, p.queue_bytes, outage
    );
    println!("steady mean: {:.1} requests/s", r.steady_mean);
    println!(
        "after the restart: peak {} requests/s ({:.2}x the steady mean)",
        r.peak_after,
        r.peak_to_mean()
    );
    match r.drain_secs {
        Some(d) => println!("time to drain: {d:.1} s"),
        None => println!("time to drain: not within {:?}", p.max_after),
    }
    println!(
        "429 answers: {} seen by the devices, {} counted by the collector; longest wait told: {:.1} s",
        r.shed_per_sec.iter().sum::<u32>(),
        r.collector_shed,
        r.longest_wait_secs
    );
    println!(
        "records written {} stored {}; devices with every record stored exactly once: {} of {}",
        r.written, r.stored, r.devices_exact, p.devices
    );
    if let Some(path) = args.get(2) {
        let title = format!(
            "real_fleet: {} uploader engines, {outage} s collector outage: peak {:.2}x steady mean, drained in {}",
            p.devices,
            r.peak_to_mean(),
            r.drain_secs.map_or("(not drained)".to_owned(), |d| format!("{d:.0} s"))
        );
        let svg = fleet_sim::histogram_svg(
            &r.requests_per_sec,
            &r.shed_per_sec,
            up,
            r.steady_mean,
            &title,
        );
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!("real_fleet: writing {path}: {e}");
            return ExitCode::from(2);
        }
        println!("histogram: {path}");
    }
    if r.written == r.stored && r.devices_exact == p.devices && r.drain_secs.is_some() {
        ExitCode::SUCCESS
    } else {
        println!("not everything was delivered exactly once");
        ExitCode::from(1)
    }
}
