//! `relay plugin check FILE`: the verdict a plugin author gets before deploying.

use std::process::Command;

use relay_tests::*;

fn check(file: &std::path::Path) -> (bool, String) {
    let out = Command::new(workspace_root().join("target/release/relay"))
        .args(["plugin", "check"])
        .arg(file)
        .output()
        .expect("relay runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn a_good_adapter_passes_with_its_metadata() {
    for name in ["openai", "anthropic", "gemini", "azure", "plugin-template"] {
        let (ok, text) = check(&adapter_wasm(name));
        assert!(ok, "{name}: {text}");
        assert!(text.contains("smoke:         transform-request -> POST /"), "{name}: {text}");
        assert!(text.contains("ok: "), "{name}: {text}");
    }
    let (_, text) = check(&adapter_wasm("anthropic"));
    assert!(text.contains("name:          anthropic") && text.contains("auth:          x-api-key: <key>"), "{text}");
    assert!(text.contains("/v1/messages"), "{text}");
}

#[test]
fn an_unfit_file_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(adapter_wasm("openai")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated.wasm", good[..good.len() / 3].to_vec(), "not a valid adapter component"),
        ("text.wasm", b"hello".to_vec(), "not a WebAssembly file"),
        ("core.wasm", b"\0asm\x01\0\0\0".to_vec(), "not a valid adapter component"),
    ];
    for (name, bytes, reason) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (ok, text) = check(&path);
        assert!(!ok && text.contains(reason), "{name}: {text}");
    }
    let (ok, text) = check(&adapter_wasm("future-contract"));
    assert!(!ok && text.contains("relay:adapter/adapter@0.1.0"), "{text}");
    let (ok, text) = check(&adapter_wasm("tagged-trap"));
    assert!(!ok && text.contains("info() failed"), "{text}");
    // A path that is not there.
    let (ok, text) = check(&dir.path().join("missing.wasm"));
    assert!(!ok && text.contains("cannot read"), "{text}");
}
