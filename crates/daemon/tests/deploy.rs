//! deploy/ checked as far as this machine can: the Kamailio edge passes `kamailio -c`, the
//! compose file and the Kubernetes manifests parse as YAML with the expected services and
//! kinds, and every configuration they hand the daemon is one it accepts. (The edge also runs
//! for real in e2e.rs, relaying a call.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use dialtone_daemon::{Config, SETTINGS};
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

/// Every YAML document of `path`, as JSON, read by PyYAML (Debian package python3-yaml).
fn yaml(path: &Path) -> Vec<Value> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{} is not YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The first and last port of a `first-last` range, checked to be one.
fn port_range(range: &str) -> (u16, u16) {
    let (first, last) = range
        .split_once('-')
        .unwrap_or_else(|| panic!("{range} is not first-last"));
    let (first, last): (u16, u16) = (first.parse().unwrap(), last.parse().unwrap());
    assert!(first <= last, "{range} is empty");
    (first, last)
}

fn known(key: &str) -> bool {
    SETTINGS.iter().any(|(k, ..)| *k == key)
}

#[test]
fn the_kamailio_edge_config_passes_kamailio_check() {
    let out = std::process::Command::new("kamailio")
        .arg("-c")
        .arg("-f")
        .arg(deploy("compose/kamailio.cfg"))
        .arg("-A")
        .arg(format!(
            "DISPATCHER_LIST=\"{}\"",
            deploy("compose/dispatcher.list").display()
        ))
        .output()
        .expect("kamailio runs (Debian package kamailio)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_file_has_two_nodes_on_postgres_behind_kamailio() {
    let docs = yaml(&deploy("compose/compose.yaml"));
    let compose = &docs[0];
    let services = compose["services"].as_object().unwrap();
    let mut names: Vec<&str> = services.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["dialtone-a", "dialtone-b", "kamailio", "postgres"]);
    let list = std::fs::read_to_string(deploy("compose/dispatcher.list")).unwrap();
    for node in ["dialtone-a", "dialtone-b"] {
        let s = &services[node];
        let env = s["environment"].as_object().unwrap();
        for key in env.keys() {
            assert!(known(key), "{node}: {key} is not a setting");
        }
        assert!(
            env["DIALTONE_DATABASE_URL"]
                .as_str()
                .unwrap()
                .starts_with("postgres://")
        );
        assert_eq!(s["build"]["dockerfile"], "deploy/docker/Dockerfile");
        // Kamailio knows each node by its address.
        let ip = s["networks"]["dialtone"]["ipv4_address"].as_str().unwrap();
        assert!(
            list.contains(&format!("sip:{ip}:5060")),
            "{ip} not in dispatcher.list"
        );
    }
    // The node ranges do not overlap and each is published.
    let a = services["dialtone-a"]["environment"]["DIALTONE_RTP_PORTS"]
        .as_str()
        .unwrap();
    let b = services["dialtone-b"]["environment"]["DIALTONE_RTP_PORTS"]
        .as_str()
        .unwrap();
    let (a_first, a_last) = port_range(a);
    let (b_first, b_last) = port_range(b);
    assert!(a_last < b_first || b_last < a_first, "{a} and {b} overlap");
    for (node, range) in [("dialtone-a", a), ("dialtone-b", b)] {
        let ports: Vec<&str> = services[node]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(
            ports.contains(&format!("{range}:{range}/udp").as_str()),
            "{node}: {ports:?}"
        );
    }
    let kamailio = &services["kamailio"];
    let mounts: Vec<&str> = kamailio["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(mounts.iter().any(|m| m.starts_with("./kamailio.cfg:")));
    assert!(mounts.iter().any(|m| m.starts_with("./dispatcher.list:")));
    let image = kamailio["build"]["dockerfile"].as_str().unwrap();
    assert!(deploy("compose").join(image).exists(), "{image}");
}

#[test]
fn the_kubernetes_manifests_have_the_expected_kinds_and_a_config_the_daemon_takes() {
    let docs = yaml(&deploy("kubernetes/dialtone.yaml"));
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "Secret", "Deployment", "Service"]);
    let deployment = &docs[2];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "RTP needs the host's ports");
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    // The ConfigMap's file and the Secret's variables, as the pod would see them.
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("dialtone.toml");
    std::fs::write(&toml, docs[0]["data"]["dialtone.toml"].as_str().unwrap()).unwrap();
    let secret = docs[1]["stringData"].as_object().unwrap().clone();
    for key in secret.keys() {
        assert!(known(key), "{key} is not a setting");
    }
    let env = move |key: &str| match key {
        "DIALTONE_SIP_ADVERTISED_ADDR" => Some("203.0.113.7".to_owned()),
        _ => secret.get(key).and_then(Value::as_str).map(str::to_owned),
    };
    let config = Config::load_from(Some(&toml), &env).unwrap();
    assert_eq!(config.rtp_ports, (20000, 29999));
    assert_eq!(config.grpc_addr, "0.0.0.0:9090".parse().unwrap());
    assert!(config.database_url.starts_with("postgres://"));
}

#[test]
fn the_systemd_example_and_the_image_name_real_settings_and_binaries() {
    let example = std::fs::read_to_string(deploy("systemd/dialtoned.env.example")).unwrap();
    for line in example.lines() {
        let line = line.trim().trim_start_matches("# ");
        if let Some((key, _)) = line.split_once('=')
            && key.starts_with("DIALTONE_")
        {
            assert!(known(key), "{key} is not a setting");
        }
    }
    let dockerfile = std::fs::read_to_string(deploy("docker/Dockerfile")).unwrap();
    for binary in [
        env!("CARGO_BIN_EXE_dialtoned"),
        env!("CARGO_BIN_EXE_dialtone"),
    ] {
        let name = Path::new(binary).file_name().unwrap().to_str().unwrap();
        assert!(
            dockerfile.contains(&format!("target/release/{name}")),
            "the image copies {name}"
        );
    }
}

#[test]
fn the_readme_documents_every_setting() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    for (key, default, _) in SETTINGS {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("README has no row for {key}"));
        if let Some(default) = default {
            assert!(row.contains(&format!("`{default}`")), "{key}: {row}");
        }
    }
}
