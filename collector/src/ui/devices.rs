//! The devices list and the page of one device (one log): what it sent, its machines,
//! builds and platforms, its counters, what it lost (with its gaps), and its newest records.

use maud::{html, Markup};

use super::gaps::{gap_table, loss_summary};
use super::{device_href, num, page, qs, when};
use crate::store::{Store, StoreError};

/// Devices listed.
const DEVICES: u32 = 1000;
/// Gap entries and records shown on a device page.
const DEVICE_GAPS: u32 = 20;
const DEVICE_RECORDS: u32 = 20;

/// Renders `/ui/devices`.
pub(crate) fn render_list(store: &Store) -> Result<Markup, StoreError> {
    let devices = store.devices(DEVICES)?;
    let body = html! {
        h1 { "Devices" }
        p.count { (num(devices.len() as u64)) " devices (logs), most recently heard from first." }
        table #devices {
            thead { tr { th { "Device (log id)" } th { "Machine id" } th { "Records" } th { "Last upload (UTC)" } th { "Gaps" } } }
            tbody {
                @for d in &devices {
                    tr {
                        td.mono { a href=(device_href(&d.log_id)) { (super::short_hex(&d.log_id, 16)) } }
                        td.mono { (d.machine_id) }
                        td { (num(d.records)) }
                        td.mono { @if d.last_received_ms > 0 { (when(d.last_received_ms)) } }
                        td { @if d.gaps > 0 { a href={ "/ui/gaps?log_id=" (hex::encode(d.log_id)) } { (num(d.gaps)) } } @else { "0" } }
                    }
                }
            }
        }
    };
    Ok(page("Devices", "/ui/devices", body))
}

fn pairs_table(id: &str, title: &str, param: Option<&str>, rows: &[(String, u64)]) -> Markup {
    html! {
        section {
            h2 { (title) }
            table id=(id) { tbody {
                @for (k, n) in rows {
                    tr {
                        td.mono {
                            @match param {
                                Some(p) => a href={ "/ui/records?" (qs(&[(p, k)])) } { (k) },
                                None => (k),
                            }
                        }
                        td { (num(*n)) }
                    }
                }
            } }
        }
    }
}

/// Renders `/ui/devices/{log_id}`; `None` when the device never uploaded.
pub(crate) fn render_device(
    store: &Store,
    log_id: [u8; 32],
    max_payload_bytes: u64,
) -> Result<Option<Markup>, StoreError> {
    let Some(d) = store.device(log_id)? else {
        return Ok(None);
    };
    let loss = store.loss_summary(Some(log_id))?;
    let gaps = store.gap_views(Some(log_id), None, DEVICE_GAPS)?;
    let log = hex::encode(log_id);
    let table = super::records::device_table(store, log_id, DEVICE_RECORDS, max_payload_bytes)?;
    let body = html! {
        h1 { "Device " code #log-id { (log) } }
        table #device { tbody {
            tr { th { "first upload" } td { (when(d.first_seen_ms)) } }
            tr { th { "last upload" } td { @if d.last_received_ms > 0 { (when(d.last_received_ms)) } } }
            tr { th { "records stored" } td { a href={ "/ui/records?" (qs(&[("log_id", &log)])) } { (num(d.records)) } } }
            tr { th { "gap entries" } td { a href={ "/ui/gaps?log_id=" (log) } { (num(d.gaps)) } } }
        } }
        (loss_summary(&loss))
        div.grid {
            (pairs_table("machines", "Machine ids", Some("machine_id"), &d.machines))
            (pairs_table("builds", "Builds", Some("build"), &d.builds))
            (pairs_table("platforms", "Platforms", Some("platform"), &d.platforms))
            (pairs_table("counters", "Device counters", None, &d.counters))
        }
        h2 { "Newest gaps" }
        (gap_table(&gaps))
        h2 { "Newest records " a href={ "/ui/records?" (qs(&[("log_id", &log)])) } { "(all)" } }
        (table)
    };
    Ok(Some(page("Device", "/ui/devices", body)))
}
