//! The `comptoir` command line run in process (`comptoir_cli::run_args`)
//! against a test relay, with a passphrase file beside its data directory.

use std::path::Path;

use super::TestRelay;

/// Run `comptoir <args>` with the data directory `dir`: (exit code, stdout).
pub async fn comptoir(dir: &Path, relay: &TestRelay, args: &[&str]) -> (u8, String) {
    comptoir_with_passphrase(dir, "cli test passphrase", relay, args).await
}

/// Run `comptoir <args>` on the account in `dir` opened with `passphrase`:
/// (exit code, stdout).
pub async fn comptoir_with_passphrase(
    dir: &Path,
    passphrase: &str,
    relay: &TestRelay,
    args: &[&str],
) -> (u8, String) {
    let pass = dir.with_extension("pass");
    std::fs::write(&pass, format!("{passphrase}\n")).expect("write");
    let mut argv = vec![
        "comptoir".to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--relay".into(),
        format!("ws://{}", relay.addr),
        "--passphrase-file".into(),
        pass.display().to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut out = Vec::new();
    let code = comptoir_cli::run_args(argv, &mut out).await;
    (code, String::from_utf8(out).expect("utf-8 output"))
}

/// `comptoir <args>` that must succeed: its standard output.
pub async fn ok(dir: &Path, relay: &TestRelay, args: &[&str]) -> String {
    let (code, out) = comptoir(dir, relay, args).await;
    assert_eq!(code, 0, "comptoir {args:?} printed {out:?}");
    out
}

/// A new account in `dir` (a business one if `business`): its id.
pub async fn account(dir: &Path, relay: &TestRelay, business: bool) -> String {
    let id = ok(dir, relay, &["init"]).await.trim().to_string();
    let register: &[&str] = if business {
        &["register", "--business"]
    } else {
        &["register"]
    };
    ok(dir, relay, register).await;
    id
}
