//! The deployment files, checked with real parsers since no container engine runs here: the compose
//! file parses and wires NATS, Jaeger and Jetway as the README says, every variable it sets for
//! Jetway is one the server reads, and `.envrc.example` documents every variable there is.

use std::collections::BTreeSet;

use jetway_server::config::{Config, KNOWN_VARIABLES};
use yaml_rust2::{Yaml, YamlLoader};

fn repo_file(name: &str) -> String {
    let path = format!("{}/../../{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"))
}

fn compose() -> Yaml {
    let mut documents =
        YamlLoader::load_from_str(&repo_file("docker-compose.yml")).expect("valid YAML");
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

#[test]
fn compose_wires_nats_jaeger_and_jetway() {
    let compose = compose();
    let services = &compose["services"];
    let nats = &services["nats"];
    assert!(
        nats["image"].as_str().unwrap().starts_with("nats:"),
        "the official NATS image"
    );
    let command: Vec<_> = nats["command"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(command.contains(&"-js"), "JetStream on: {command:?}");
    assert!(
        !nats["volumes"].is_badvalue(),
        "NATS keeps its data in a volume"
    );
    assert!(
        !nats["healthcheck"]["test"].is_badvalue(),
        "NATS has a healthcheck"
    );

    let jaeger = &services["jaeger"];
    assert!(
        jaeger["image"]
            .as_str()
            .unwrap()
            .starts_with("jaegertracing/")
    );
    assert_eq!(
        jaeger["environment"]["COLLECTOR_OTLP_ENABLED"].as_str(),
        Some("true")
    );
    let jaeger_ports: Vec<_> = jaeger["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        jaeger_ports.contains(&"16686:16686"),
        "the Jaeger UI: {jaeger_ports:?}"
    );

    let jetway = &services["jetway"];
    assert_eq!(
        jetway["build"].as_str(),
        Some("."),
        "built from the repository's Dockerfile"
    );
    assert_eq!(
        jetway["depends_on"]["nats"]["condition"].as_str(),
        Some("service_healthy")
    );
    let environment = jetway["environment"].as_hash().expect("a map of variables");
    let vars: Vec<(String, String)> = environment
        .iter()
        .map(|(k, v)| {
            let value = v
                .as_str()
                .map(str::to_owned)
                .or_else(|| v.as_i64().map(|i| i.to_string()));
            (
                k.as_str().unwrap().to_owned(),
                value.expect("a scalar value"),
            )
        })
        .collect();
    for (name, _) in &vars {
        assert!(
            KNOWN_VARIABLES.contains(&name.as_str()),
            "compose sets {name}, which the server does not read"
        );
    }
    let config = Config::from_iter(vars).expect("the compose environment is a valid configuration");
    assert_eq!(config.nats_url.as_deref(), Some("nats://nats:4222"));
    assert_eq!(
        config.telemetry.export_endpoint(),
        Some("http://jaeger:4317")
    );
}

#[test]
fn the_dockerfile_runs_as_a_non_root_user() {
    let dockerfile = repo_file("Dockerfile");
    assert!(
        dockerfile
            .lines()
            .filter(|l| l.starts_with("FROM "))
            .count()
            >= 2,
        "multi-stage"
    );
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    let name = user.split(':').next().unwrap_or_default().trim();
    assert!(!["root", "0", ""].contains(&name), "runs as {user}");
    assert!(
        dockerfile.contains("--locked"),
        "builds with the committed Cargo.lock"
    );
}

#[test]
fn envrc_example_documents_every_variable() {
    let documented: BTreeSet<_> = repo_file(".envrc.example")
        .lines()
        .filter_map(|line| line.trim_start_matches('#').trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('=').map(|(name, _)| name.to_owned()))
        .collect();
    let known: BTreeSet<_> = KNOWN_VARIABLES.iter().map(|v| v.to_string()).collect();
    assert_eq!(documented, known);
}
