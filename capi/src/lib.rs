//! seglog's C API, declared in `include/seglog.h` and built as `libseglog.so` (soname
//! `libseglog.so.0`) and `libseglog.a`, with a pkg-config file (`seglog.pc`, see
//! `capi/README.md`): `seglog_open`, `seglog_record`, `seglog_close`, `seglog_strerror` and
//! `seglog_last_error`.
//!
//! Every function catches panics (a panic never unwinds into C: it becomes
//! `SEGLOG_E_INTERNAL`), checks every pointer for NULL, and leaves a message for
//! `seglog_last_error` on the calling thread.
// Raw pointers from C: every unsafe block has a SAFETY comment (UNSAFE.md lists them).
#![warn(missing_docs)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use config_layers::GlobalArgs;
use recorder::config::Config;
use recorder::{OpenError, RecordBuilder, RecordError, Recorder};
use records::{Classification, EventId, Severity};

/// `SEGLOG_OK`.
pub const SEGLOG_OK: c_int = 0;
/// `SEGLOG_HELD_BACK`: success, and the rate limiter spooled the record (held back from
/// upload until the time `seglog_last_error` names).
pub const SEGLOG_HELD_BACK: c_int = 1;
/// `SEGLOG_E_INVALID_ARGUMENT`.
pub const SEGLOG_E_INVALID_ARGUMENT: c_int = -1;
/// `SEGLOG_E_CLASSIFICATION`.
pub const SEGLOG_E_CLASSIFICATION: c_int = -2;
/// `SEGLOG_E_SEVERITY`.
pub const SEGLOG_E_SEVERITY: c_int = -3;
/// `SEGLOG_E_EVENT_ID`.
pub const SEGLOG_E_EVENT_ID: c_int = -4;
/// `SEGLOG_E_PAYLOAD_TOO_LARGE`.
pub const SEGLOG_E_PAYLOAD_TOO_LARGE: c_int = -5;
/// `SEGLOG_E_RATE_LIMITED`.
pub const SEGLOG_E_RATE_LIMITED: c_int = -6;
/// `SEGLOG_E_CONFIG`.
pub const SEGLOG_E_CONFIG: c_int = -7;
/// `SEGLOG_E_IO`.
pub const SEGLOG_E_IO: c_int = -8;
/// `SEGLOG_E_NO_SPACE`.
pub const SEGLOG_E_NO_SPACE: c_int = -9;
/// `SEGLOG_E_INTERNAL`.
pub const SEGLOG_E_INTERNAL: c_int = -10;

/// The opaque handle behind `seglog_t`.
pub struct SeglogHandle {
    rec: Recorder,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

type Failure = (c_int, String);

/// Runs `f`, turning errors and panics into return codes and the thread's last error.
fn guard(f: impl FnOnce() -> Result<(), Failure>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_last_error("");
            SEGLOG_OK
        }
        Ok(Err((code, msg))) => {
            set_last_error(&msg);
            code
        }
        Err(_) => {
            set_last_error("internal error: seglog panicked; please report it");
            SEGLOG_E_INTERNAL
        }
    }
}

/// Reads an optional C string.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the call.
unsafe fn opt_str<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: `p` is non-NULL and, by the caller's contract, NUL-terminated and valid.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map(Some).map_err(|_| {
        (
            SEGLOG_E_INVALID_ARGUMENT,
            format!("{what} is not valid UTF-8"),
        )
    })
}

fn open_code(e: &OpenError) -> c_int {
    match e {
        OpenError::Config(_) => SEGLOG_E_CONFIG,
        OpenError::Log(l) if l.code() == "no_space" => SEGLOG_E_NO_SPACE,
        OpenError::Log(l) if l.code() == "invalid_options" => SEGLOG_E_CONFIG,
        _ => SEGLOG_E_IO,
    }
}

fn record_code(e: &RecordError) -> c_int {
    match e {
        RecordError::Invalid(v) => match v.field() {
            "classification" => SEGLOG_E_CLASSIFICATION,
            "severity" => SEGLOG_E_SEVERITY,
            _ => SEGLOG_E_EVENT_ID,
        },
        RecordError::PayloadTooLarge { .. } | RecordError::ContextTooLarge { .. } => {
            SEGLOG_E_PAYLOAD_TOO_LARGE
        }
        RecordError::RateLimited { .. } => SEGLOG_E_RATE_LIMITED,
        RecordError::Log(l) if l.code() == "no_space" => SEGLOG_E_NO_SPACE,
        _ => SEGLOG_E_IO,
    }
}

/// Opens the log; see `seglog.h`.
///
/// # Safety
/// `dir` and `config_file` are NULL or NUL-terminated strings; `out` is NULL or points to
/// writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn seglog_open(
    dir: *const c_char,
    config_file: *const c_char,
    out: *mut *mut SeglogHandle,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err((SEGLOG_E_INVALID_ARGUMENT, "out must not be NULL".into()));
        }
        // SAFETY: forwarded caller contract: NULL or NUL-terminated strings.
        let dir = unsafe { opt_str(dir, "dir") }?.map(PathBuf::from);
        // SAFETY: as above.
        let config = unsafe { opt_str(config_file, "config_file") }?.map(PathBuf::from);
        let global = GlobalArgs { dir, config };
        let cfg = Config::load(&global).map_err(|e| (SEGLOG_E_CONFIG, format!("{e:#}")))?;
        let rec = Recorder::open(&cfg).map_err(|e| (open_code(&e), e.to_string()))?;
        let handle = Box::into_raw(Box::new(SeglogHandle { rec }));
        // SAFETY: `out` is non-NULL and points to writable storage (caller contract).
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Appends one record; see `seglog.h`.
///
/// # Safety
/// `log` is NULL or a live handle from `seglog_open`; `classification` and `event_id` are
/// NULL or NUL-terminated; `payload` is NULL or readable for `payload_len` bytes;
/// `record_id_out` is NULL or writable for 33 bytes.
#[no_mangle]
pub unsafe extern "C" fn seglog_record(
    log: *mut SeglogHandle,
    classification: *const c_char,
    severity: c_int,
    payload: *const c_void,
    payload_len: usize,
    event_id: *const c_char,
    record_id_out: *mut c_char,
) -> c_int {
    guard(|| {
        // SAFETY: `log` is NULL or a live handle (caller contract); only shared access.
        let Some(h) = (unsafe { log.as_ref() }) else {
            return Err((
                SEGLOG_E_INVALID_ARGUMENT,
                "log handle must not be NULL".into(),
            ));
        };
        // SAFETY: forwarded caller contract.
        let class = unsafe { opt_str(classification, "classification") }?.ok_or((
            SEGLOG_E_CLASSIFICATION,
            "classification must not be NULL".to_string(),
        ))?;
        let class =
            Classification::new(class).map_err(|e| (SEGLOG_E_CLASSIFICATION, e.to_string()))?;
        let severity =
            Severity::new(i64::from(severity)).map_err(|e| (SEGLOG_E_SEVERITY, e.to_string()))?;
        let bytes: &[u8] = if payload_len == 0 {
            &[]
        } else if payload.is_null() {
            return Err((
                SEGLOG_E_INVALID_ARGUMENT,
                "payload is NULL but payload_len is not 0".into(),
            ));
        } else {
            // SAFETY: non-NULL and readable for `payload_len` bytes (caller contract); the
            // slice lives only during this call.
            unsafe { std::slice::from_raw_parts(payload.cast::<u8>(), payload_len) }
        };
        let mut b = RecordBuilder::new(class, severity).payload(bytes);
        // SAFETY: forwarded caller contract.
        if let Some(e) = unsafe { opt_str(event_id, "event_id") }? {
            b = b.event_id(EventId::parse(e).map_err(|e| (SEGLOG_E_EVENT_ID, e.to_string()))?);
        }
        let receipt = h
            .rec
            .record(&b)
            .map_err(|e| (record_code(&e), e.to_string()))?;
        // The id (a sha256) is derived only for a caller that asked for it.
        if !record_id_out.is_null() {
            let mut text = receipt.id().to_string().into_bytes();
            text.push(0);
            // SAFETY: `record_id_out` is writable for 33 bytes (caller contract) and `text`
            // is exactly 33 bytes; the regions cannot overlap (`text` is ours).
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr(), record_id_out.cast::<u8>(), text.len())
            };
        }
        if let Some(until) = receipt.held_back_until() {
            // Not a failure: a positive code, with the release time as the thread's note.
            let when =
                recorder::counters::describe_release(until, recorder::counters::now_wall_ms());
            return Err((
                SEGLOG_HELD_BACK,
                format!("record written but held back from upload by the rate limit (rate_limit_strategy = spool), {when}"),
            ));
        }
        Ok(())
    })
}

/// Closes a handle; see `seglog.h`.
///
/// # Safety
/// `log` is NULL or a handle from `seglog_open` that is not used again.
#[no_mangle]
pub unsafe extern "C" fn seglog_close(log: *mut SeglogHandle) {
    if log.is_null() {
        return;
    }
    // SAFETY: `log` came from `Box::into_raw` in `seglog_open` and is closed once (caller
    // contract), so reclaiming the box is sound.
    let h = unsafe { Box::from_raw(log) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(h)));
}

/// A static description of a return code.
#[no_mangle]
pub extern "C" fn seglog_strerror(code: c_int) -> *const c_char {
    let s: &'static CStr = match code {
        SEGLOG_OK => c"success",
        SEGLOG_HELD_BACK => {
            c"success; the rate limit held the record back from upload (strategy spool)"
        }
        SEGLOG_E_INVALID_ARGUMENT => c"invalid argument (NULL pointer or non-UTF-8 string)",
        SEGLOG_E_CLASSIFICATION => {
            c"invalid classification: use DOMAIN/PROBE/REST, printable ASCII, at most 140 bytes"
        }
        SEGLOG_E_SEVERITY => c"invalid severity: use 1 (low) to 4 (critical)",
        SEGLOG_E_EVENT_ID => c"invalid event id: use 32 hex characters",
        SEGLOG_E_PAYLOAD_TOO_LARGE => c"payload too large for log.max_record_size",
        SEGLOG_E_RATE_LIMITED => c"rate limit reached; the record was dropped and counted",
        SEGLOG_E_CONFIG => c"invalid configuration",
        SEGLOG_E_IO => c"I/O error on the log or its state files",
        SEGLOG_E_NO_SPACE => c"no space left on the device; free space and retry",
        SEGLOG_E_INTERNAL => c"internal error in seglog",
        _ => c"unknown seglog return code",
    };
    s.as_ptr()
}

/// The calling thread's last error message.
#[no_mangle]
pub extern "C" fn seglog_last_error() -> *const c_char {
    // The pointer stays valid until this thread's next seglog call replaces the string.
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
