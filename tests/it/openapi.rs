//! The checked-in `openapi.yaml` must equal the spec the code generates.

use std::path::Path;

#[test]
fn checked_in_spec_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml");
    let generated = agent_monitor::api::spec_yaml();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write openapi.yaml");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated {
        let first_difference = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()) + 1);
        panic!(
            "openapi.yaml is out of date with the API code (first difference at line \
             {first_difference}); run `cargo run -- openapi > openapi.yaml` (or \
             `UPDATE_OPENAPI=1 cargo test --test it openapi`) and commit the result"
        );
    }
}
