//! A test whose server is not configured: in CI (`CI=true`) it fails; elsewhere
//! it passes with a visible `SKIPPED` line. Checked by running this test
//! binary again as a child with the Redis URL unset.

use std::process::Command;

use picocache_tests::server_url;

/// Acts only in the child runs below.
#[test]
fn probe() {
    if std::env::var_os("PICOCACHE_SKIP_PROBE").is_none() {
        return;
    }
    let Some(_) = server_url("redis") else { return };
    panic!("the child run has no Redis URL");
}

fn child(ci: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "probe", "--test-threads=1"])
        .env("PICOCACHE_SKIP_PROBE", "1")
        .env_remove("PICOCACHE_REDIS_URL")
        .env_remove("CI");
    if let Some(v) = ci {
        cmd.env("CI", v);
    }
    cmd.output().unwrap()
}

#[test]
fn a_missing_server_fails_in_ci_and_skips_visibly_elsewhere() {
    let ci = child(Some("true"));
    let err =
        String::from_utf8_lossy(&ci.stdout).into_owned() + &String::from_utf8_lossy(&ci.stderr);
    assert!(
        !ci.status.success(),
        "CI=true: a missing server fails the test\n{err}"
    );
    assert!(err.contains("PICOCACHE_REDIS_URL is not set"), "{err}");

    let dev = child(None);
    let err = String::from_utf8_lossy(&dev.stderr);
    assert!(dev.status.success(), "without CI the test passes\n{err}");
    assert!(
        err.contains("SKIPPED: redis test: PICOCACHE_REDIS_URL is not set"),
        "a visible SKIPPED line on stderr, not captured by the harness: {err}"
    );
}
