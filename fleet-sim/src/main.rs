//! `fleet-sim [DEVICES] [OUT.svg]`: runs the default scenario (see `fleet_sim::Params`;
//! `FLEET_SIM_PASS_CHASES=1` for passes that chase the end of the log until caught up, as
//! the daemon did before issue 16; `FLEET_SIM_BACKOFF_CAP=SECS` for another backoff cap;
//! `FLEET_SIM_SEED=N` for another random seed (default 16);
//! `FLEET_SIM_DUMP=SECS` prints that many seconds after the outage: requests, 429s, first
//! attempts),
//! prints the figures, writes the request-rate histogram after the outage as an SVG.
//! Exit 0 when the targets hold (peak <= 3x steady mean, the backlog drained, no device
//! waited longer than the backoff cap between attempts), 1 when one does not, 2 on bad
//! arguments or an unwritable file.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut p = fleet_sim::Params::default();
    if let Some(n) = args.first() {
        match n.parse() {
            Ok(n) if n > 0 => {
                // Keep the collector's headroom: capacity and queue scale with the fleet.
                let scale = f64::from(n) / f64::from(p.devices);
                p.capacity_records_per_sec *= scale;
                p.queue_records = ((p.queue_records as f64) * scale).max(1.0) as u64;
                p.devices = n;
            }
            _ => {
                eprintln!("fleet-sim: DEVICES must be a positive number, not {n:?}\nusage: fleet-sim [DEVICES] [OUT.svg]");
                return ExitCode::from(2);
            }
        }
    }
    let out = args.get(1).cloned();
    // FLEET_SIM_PASS_CHASES=1: passes chase the end of the log (the daemon before issue 16).
    p.pass_stops_at_start = std::env::var_os("FLEET_SIM_PASS_CHASES").is_none_or(|v| v != "1");
    // FLEET_SIM_BACKOFF_CAP=SECS: the devices' backoff cap (default 2400, the uploader's), to see the floor
    // that the devices' own retries during an outage set.
    if let Ok(v) = std::env::var("FLEET_SIM_BACKOFF_CAP") {
        match v.parse::<u64>() {
            Ok(s) if s > 0 => p.backoff_cap = std::time::Duration::from_secs(s),
            _ => {
                eprintln!("fleet-sim: FLEET_SIM_BACKOFF_CAP must be a positive number of seconds, not {v:?}");
                return ExitCode::from(2);
            }
        }
    }
    // FLEET_SIM_SEED=N: another random seed (the figures in BENCHMARKS.md are seed 16 and a
    // spread over seeds).
    if let Ok(v) = std::env::var("FLEET_SIM_SEED") {
        match v.parse::<u64>() {
            Ok(s) => p.seed = s,
            _ => {
                eprintln!("fleet-sim: FLEET_SIM_SEED must be a number, not {v:?}");
                return ExitCode::from(2);
            }
        }
    }
    let r = fleet_sim::run(&p);
    let cap = p.backoff_cap.as_secs_f64();
    println!(
        "{} devices, {} records/s each, collector {} records/s, queue {} records, outage {} s",
        p.devices,
        p.records_per_sec,
        p.capacity_records_per_sec,
        p.queue_records,
        p.outage_ms / 1000
    );
    println!("steady mean: {:.1} requests/s", r.steady_mean);
    println!(
        "after the outage: peak {} requests/s ({:.2}x the steady mean)",
        r.peak_after,
        r.peak_to_mean()
    );
    println!(
        "  without each device's first attempt after the outage (its backoff, not the collector's schedule): peak {} requests/s ({:.2}x)",
        r.peak_after_without_first_contact,
        f64::from(r.peak_after_without_first_contact) / r.steady_mean.max(f64::MIN_POSITIVE)
    );
    println!(
        "  highest 10 s mean {:.1} requests/s ({:.2}x), highest 60 s mean {:.1} requests/s ({:.2}x)",
        r.peak_after_10s,
        r.peak_after_10s / r.steady_mean.max(f64::MIN_POSITIVE),
        r.peak_after_60s,
        r.peak_after_60s / r.steady_mean.max(f64::MIN_POSITIVE)
    );
    println!(
        "in the hour after draining: peak {} requests/s",
        r.peak_after_drain
    );
    match r.drain_secs {
        Some(d) => println!("time to drain: {d:.0} s"),
        None => println!("time to drain: not within {} s", p.max_after_ms / 1000),
    }
    println!(
        "longest wait between attempts: {:.0} s (cap {cap:.0} s); slowest first success after the outage: {:.0} s",
        r.longest_wait_secs, r.slowest_first_success_secs
    );
    println!(
        "batches stored: {}, answered 429: {}, records written {} stored {}",
        r.batches, r.shed, r.written, r.stored
    );
    let s = r.schedule;
    println!(
        "return calendar: {} refusals booked, {} sent to the horizon, {} early returns told the rest, {} taken on their booking",
        s.booked, s.overflowed, s.early, s.taken_on_booking
    );
    // FLEET_SIM_DUMP=SECS: per second after the outage (all, 429, first contacts).
    if let Some(n) = std::env::var("FLEET_SIM_DUMP")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let from = usize::try_from((p.outage_start_ms + p.outage_ms) / 1000).unwrap_or(0);
        for s in from..(from + n).min(r.requests_per_sec.len()) {
            println!(
                "+{:5} s {:4} {:4} {:4}",
                s - from,
                r.requests_per_sec[s],
                r.shed_per_sec[s],
                r.first_contact_per_sec[s]
            );
        }
    }
    if let Some(path) = out {
        let from = usize::try_from((p.outage_start_ms + p.outage_ms) / 1000).unwrap_or(0);
        let title = format!(
            "fleet-sim: {} devices, 1 h outage, collector at {:.0} records/s: peak {:.2}x steady mean, drained in {}",
            p.devices,
            p.capacity_records_per_sec,
            r.peak_to_mean(),
            r.drain_secs.map_or("(not drained)".to_owned(), |d| format!("{d:.0} s"))
        );
        let svg = fleet_sim::histogram_svg(
            &r.requests_per_sec,
            &r.shed_per_sec,
            from,
            r.steady_mean,
            &title,
        );
        if let Err(e) = std::fs::write(&path, svg) {
            eprintln!("fleet-sim: writing {path}: {e}");
            return ExitCode::from(2);
        }
        println!("histogram: {path}");
    }
    let ok = r.peak_to_mean() <= 3.0 && r.drain_secs.is_some() && r.longest_wait_secs <= cap + 60.0;
    if ok {
        ExitCode::SUCCESS
    } else {
        println!("a target was missed");
        ExitCode::from(1)
    }
}
