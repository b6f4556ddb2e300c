//! Shared by the ingest integration tests.

/// Whether the io_uring halves of these tests can run here. In CI
/// (`ROO_REQUIRE_IO_URING=1`, set by .ci/run) io_uring must work; elsewhere
/// a kernel or sandbox without it skips them, loudly.
pub fn io_uring_here() -> bool {
    match roo_ingest::io_uring_probe() {
        Ok(()) => true,
        Err(why) if std::env::var_os("ROO_REQUIRE_IO_URING").is_some() => {
            panic!("io_uring is required here (ROO_REQUIRE_IO_URING) but unavailable: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED the io_uring half of this test: io_uring unavailable: {why}");
            false
        }
    }
}
