//! The floors of the homeserver hold: storage uses no domain, no domain uses the HTTP layer
//! (`scripts/import-graph.py --check`; the crates below, kairan-core and kairan-types,
//! are kept below by the compiler).

#[test]
fn no_lower_floor_uses_a_higher_one() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/import-graph.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--check")
        .output()
        .expect("python3 runs scripts/import-graph.py");
    assert!(
        out.status.success(),
        "the import direction is broken:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
