//! The image the cluster tests run is assembled offline (`scripts/image.sh offline`) from the
//! binary under test, since no registry is reachable here; users build the `Dockerfile`. This
//! test holds the two together: the assembled image's config and files must say what the
//! Dockerfile's runtime stage says (user, entrypoint, ports, binary path).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::repo_root;

/// What the runtime stage of the Dockerfile (its lines from the last FROM on) declares.
#[derive(Debug, PartialEq)]
pub struct RuntimeStage {
    pub binary_path: String,
    pub user: String,
    pub entrypoint: Vec<String>,
    pub ports: BTreeSet<String>,
}

pub fn dockerfile_runtime_stage(dockerfile: &str) -> RuntimeStage {
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    let from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM in the Dockerfile");
    let stage = &lines[from..];
    let value = |instruction: &str| -> Vec<&str> {
        stage
            .iter()
            .filter_map(|l| l.strip_prefix(instruction))
            .filter_map(|rest| rest.strip_prefix(' '))
            .map(str::trim)
            .collect()
    };
    let copy = value("COPY");
    assert_eq!(copy.len(), 1, "one COPY in the runtime stage: {copy:?}");
    let entrypoint = value("ENTRYPOINT");
    assert_eq!(entrypoint.len(), 1, "one ENTRYPOINT: {entrypoint:?}");
    RuntimeStage {
        binary_path: copy[0]
            .split_whitespace()
            .last()
            .expect("COPY's destination")
            .to_owned(),
        user: value("USER").last().expect("a USER").to_string(),
        entrypoint: serde_json::from_str(entrypoint[0]).expect("ENTRYPOINT in exec form"),
        ports: value("EXPOSE")
            .iter()
            .flat_map(|l| l.split_whitespace())
            .map(|p| {
                if p.contains('/') {
                    p.to_owned()
                } else {
                    format!("{p}/tcp")
                }
            })
            .collect(),
    }
}

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Builds the offline image of the binary under test as `reference` into `archive`.
pub fn build_offline(reference: &str, archive: &Path) {
    let script = repo_root().join("scripts/image.sh");
    run(
        script.to_str().expect("a UTF-8 path"),
        &[
            "offline",
            env!("CARGO_BIN_EXE_winipam"),
            reference,
            archive.to_str().expect("a UTF-8 path"),
        ],
    );
}

/// The image's config and the files of its layers, read from a docker-archive.
fn inspect(archive: &Path) -> (Value, BTreeSet<String>, String) {
    let archive = archive.to_str().expect("a UTF-8 path");
    let config: Value = serde_json::from_slice(&run(
        "skopeo",
        &["inspect", "--config", &format!("docker-archive:{archive}")],
    ))
    .expect("the image config");
    let manifest: Value =
        serde_json::from_slice(&run("tar", &["-xOf", archive, "manifest.json"])).expect("manifest");
    let mut files = BTreeSet::new();
    let mut passwd = String::new();
    for layer in manifest[0]["Layers"].as_array().expect("layers") {
        let layer = layer.as_str().expect("a layer path");
        let listing = Command::new("sh")
            .arg("-c")
            .arg(r#"tar -xOf "$1" "$2" | tar -t"#)
            .args(["sh", archive, layer])
            .output()
            .expect("list a layer");
        for file in String::from_utf8_lossy(&listing.stdout).lines() {
            files.insert(format!(
                "/{}",
                file.trim_start_matches("./").trim_end_matches('/')
            ));
        }
        let etc = Command::new("sh")
            .arg("-c")
            .arg(r#"tar -xOf "$1" "$2" | tar -xO etc/passwd 2>/dev/null || tar -xOf "$1" "$2" | tar -xO ./etc/passwd 2>/dev/null"#)
            .args(["sh", archive, layer])
            .output()
            .expect("read /etc/passwd");
        passwd.push_str(&String::from_utf8_lossy(&etc.stdout));
    }
    (config, files, passwd)
}

#[test]
fn the_offline_image_says_what_the_dockerfile_says() {
    let dockerfile =
        std::fs::read_to_string(repo_root().join("Dockerfile")).expect("read the Dockerfile");
    let stage = dockerfile_runtime_stage(&dockerfile);
    assert_eq!(
        stage.entrypoint[0], stage.binary_path,
        "the entrypoint runs the copied binary"
    );

    let dir = tempfile::tempdir().expect("a temp dir");
    let archive = dir.path().join("winipam.tar");
    build_offline("localhost/winipam:drift-check", &archive);
    let (config, files, passwd) = inspect(&archive);
    let config = &config["config"];

    assert_eq!(config["User"], stage.user.as_str(), "USER");
    let entrypoint: Vec<String> =
        serde_json::from_value(config["Entrypoint"].clone()).expect("Entrypoint");
    assert_eq!(entrypoint, stage.entrypoint, "ENTRYPOINT");
    let ports: BTreeSet<String> = config["ExposedPorts"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(ports, stage.ports, "EXPOSE");
    for file in [
        stage.binary_path.as_str(),
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/passwd",
        "/etc/group",
        "/tmp",
    ] {
        assert!(
            files.contains(file),
            "{file} is not in the image: {files:?}"
        );
    }
    // distroless' `nonroot`: the chart's runAsUser names the same uid.
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("{}:x:65532:65532:", stage.user))),
        "{} is not uid/gid 65532 in the image's /etc/passwd: {passwd}",
        stage.user
    );
}

#[test]
fn the_runtime_stage_is_read_as_docker_reads_it() {
    let stage = dockerfile_runtime_stage(
        "FROM a AS builder\nUSER root\nEXPOSE 1\nFROM b\nCOPY --from=builder /x /usr/bin/x\nUSER nonroot\nEXPOSE 8080 9443/udp\nENTRYPOINT [\"/usr/bin/x\", \"run\"]\n",
    );
    assert_eq!(
        stage,
        RuntimeStage {
            binary_path: "/usr/bin/x".into(),
            user: "nonroot".into(),
            entrypoint: vec!["/usr/bin/x".into(), "run".into()],
            ports: ["8080/tcp".to_owned(), "9443/udp".to_owned()].into(),
        }
    );
}
