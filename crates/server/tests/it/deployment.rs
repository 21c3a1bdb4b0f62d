//! The deployment files, checked with real parsers since no container engine runs here: the compose
//! file parses and wires NATS, Jaeger and Jetway as docs/deployment.md and docs/observability.md
//! say, every variable it sets for Jetway is one the server reads, and `.envrc.example` and the
//! configuration table of docs/configuration.md document every variable there is, as
//! `jetway_server::config::VARIABLES` declares it. Every relative link of README.md and the pages of
//! docs/ leads to a file that exists, and to a heading of it when it names one.

use std::collections::BTreeSet;

use jetway_server::config::{Config, DefaultValue, KNOWN_VARIABLES, VARIABLES, markdown_table};
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

/// A compose service with its YAML merge key (`<<: *anchor`) applied, as Compose applies it: the
/// parser resolves the alias but leaves the merge to its user.
fn service(compose: &Yaml, name: &str) -> Yaml {
    let own = compose["services"][name]
        .as_hash()
        .unwrap_or_else(|| panic!("a service {name}"));
    let mut merged = own
        .get(&Yaml::String("<<".into()))
        .and_then(Yaml::as_hash)
        .cloned()
        .unwrap_or_default();
    for (key, value) in own {
        if key.as_str() != Some("<<") {
            merged.insert(key.clone(), value.clone());
        }
    }
    Yaml::Hash(merged)
}

fn strings(list: &Yaml) -> Vec<&str> {
    list.as_vec()
        .map(|items| items.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

/// The environment of a compose service as the server would see it.
fn environment(service: &Yaml) -> Vec<(String, String)> {
    service["environment"]
        .as_hash()
        .expect("a map of variables")
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
        .collect()
}

/// The nats-server version `scripts/install-nats-server.sh` pins for the tests and the local default.
fn pinned_nats_version() -> String {
    repo_file("scripts/install-nats-server.sh")
        .lines()
        .find_map(|line| line.strip_prefix("NATS_SERVER_VERSION=\"${NATS_SERVER_VERSION:-"))
        .and_then(|rest| rest.strip_suffix("}\""))
        .expect("the pinned version in install-nats-server.sh")
        .to_owned()
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
    let command = strings(&nats["command"]);
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
    let jaeger_ports = strings(&jaeger["ports"]);
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
    let vars = environment(jetway);
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

/// Every NATS image in the compose file runs the version the tests run against, and every Jetway
/// service is checked by the binary's own probe.
#[test]
fn compose_pins_the_tested_nats_and_probes_every_jetway() {
    let compose = compose();
    let expected = format!("nats:{}-alpine", pinned_nats_version());
    let names: Vec<&str> = compose["services"]
        .as_hash()
        .unwrap()
        .keys()
        .filter_map(Yaml::as_str)
        .collect();
    for name in &names {
        let service = service(&compose, name);
        let image = service["image"].as_str().unwrap_or_default();
        if image.starts_with("nats:") {
            assert_eq!(image, expected, "{name}");
        }
        if service["build"].as_str() == Some(".") {
            assert_eq!(
                strings(&service["healthcheck"]["test"]),
                ["CMD", "/usr/local/bin/jetway-server", "healthcheck"],
                "{name}"
            );
        }
    }
}

/// The `cluster` profile: three JetStream nodes routed to each other under distinct names, and two
/// Jetway replicas, each given every node, on host ports of their own.
#[test]
fn the_cluster_profile_runs_three_nats_nodes_and_two_jetways() {
    let compose = compose();
    let nodes = ["nats-1", "nats-2", "nats-3"];
    let conf = "deploy/compose/nats-cluster.conf";
    let mount = format!("./{conf}:/etc/nats/cluster.conf:ro");
    for node in nodes {
        let service = service(&compose, node);
        assert_eq!(strings(&service["profiles"]), ["cluster"], "{node}");
        assert_eq!(
            strings(&service["command"]),
            ["-c", "/etc/nats/cluster.conf"],
            "{node} runs the shared config file"
        );
        assert_eq!(
            service["environment"]["NODE_NAME"].as_str(),
            Some(node),
            "a server name of its own"
        );
        let volumes = strings(&service["volumes"]);
        assert!(volumes.contains(&mount.as_str()), "{node}: {volumes:?}");
        assert!(
            volumes.iter().any(|v| v.ends_with(":/data")),
            "{node} keeps its data: {volumes:?}"
        );
        assert!(!service["healthcheck"]["test"].is_badvalue(), "{node}");
    }
    // The shared file routes every node to all three, fsyncs every write, and is one nats-server
    // itself accepts for each node's name.
    let text = repo_file(conf);
    for node in nodes {
        assert!(
            text.contains(&format!("nats-route://{node}:6222")),
            "routes to {node}"
        );
    }
    assert!(
        text.contains("sync_interval: always"),
        "fsync on every write"
    );
    let nats = jetway_testkit::NatsServer::start();
    for node in nodes {
        let checked = std::process::Command::new(nats.binary())
            .args([
                "-c",
                &format!("{}/../../{conf}", env!("CARGO_MANIFEST_DIR")),
                "-t",
            ])
            .env("NODE_NAME", node)
            .output()
            .expect("run nats-server -t");
        assert!(
            checked.status.success(),
            "nats-server rejects {conf} for {node}: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    let mut host_ports = BTreeSet::new();
    for replica in ["jetway-1", "jetway-2"] {
        let service = service(&compose, replica);
        assert_eq!(strings(&service["profiles"]), ["cluster"], "{replica}");
        for node in nodes {
            assert_eq!(
                service["depends_on"][node]["condition"].as_str(),
                Some("service_healthy"),
                "{replica} waits for {node}"
            );
        }
        let config = Config::from_iter(environment(&service))
            .unwrap_or_else(|err| panic!("{replica}: {err}"));
        let url = config.nats_url.expect("NATS_URL");
        for node in nodes {
            assert!(
                url.contains(&format!("nats://{node}:4222")),
                "{replica} can fail over to {node}: {url}"
            );
        }
        for port in strings(&service["ports"]) {
            let host = port.split(':').next().unwrap().to_owned();
            assert!(host_ports.insert(host), "{replica} reuses host port {port}");
        }
    }
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

/// `.envrc.example` names every variable, and exports (uncommented) exactly those with a default
/// value, set to that default: "the values shown are the defaults".
#[test]
fn envrc_example_documents_every_variable_with_its_default() {
    let example = repo_file(".envrc.example");
    let assignments = |commented: bool| -> Vec<(String, String)> {
        example
            .lines()
            .filter(|line| line.starts_with('#') == commented)
            .filter_map(|line| line.trim_start_matches('#').trim().strip_prefix("export "))
            .filter_map(|assignment| assignment.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    };
    let exported = assignments(false);
    let documented: BTreeSet<_> = exported
        .iter()
        .chain(&assignments(true))
        .map(|(name, _)| name.clone())
        .collect();
    let known: BTreeSet<_> = KNOWN_VARIABLES.iter().map(|v| v.to_string()).collect();
    assert_eq!(documented, known);
    let defaults: BTreeSet<(String, String)> = VARIABLES
        .iter()
        .filter_map(|variable| match variable.default_value() {
            DefaultValue::Value(value) => Some((variable.name().to_owned(), value.to_owned())),
            DefaultValue::Absent(_) => None,
        })
        .collect();
    assert_eq!(
        exported.into_iter().collect::<BTreeSet<_>>(),
        defaults,
        ".envrc.example exports each variable that has a default, set to its default"
    );
}

const TABLE_BEGIN: &str = "<!-- configuration-table: generated from VARIABLES";
const TABLE_END: &str = "<!-- configuration-table: end -->";
/// The page that holds the configuration table, from the repository's root.
const CONFIGURATION_PAGE: &str = "docs/configuration.md";
const REGENERATE: &str = "cargo test -p jetway-server --test it -- --ignored \
                          deployment::regenerate_configuration_table";

/// The configuration page with its table (between the marker comments) replaced by the one
/// `VARIABLES` renders.
fn page_with_generated_table(page: &str) -> String {
    let begin = page
        .find(TABLE_BEGIN)
        .unwrap_or_else(|| panic!("the table's begin marker in {CONFIGURATION_PAGE}"));
    let begin = begin + page[begin..].find('\n').expect("a line after the marker") + 1;
    let end = begin
        + page[begin..]
            .find(TABLE_END)
            .unwrap_or_else(|| panic!("the table's end marker in {CONFIGURATION_PAGE}"));
    format!("{}\n{}\n{}", &page[..begin], markdown_table(), &page[end..])
}

#[test]
fn the_documented_configuration_table_is_the_declared_one() {
    let page = repo_file(CONFIGURATION_PAGE);
    assert!(
        page == page_with_generated_table(&page),
        "{CONFIGURATION_PAGE}'s configuration table differs from VARIABLES in \
         crates/server/src/infra/config.rs; regenerate it with `{REGENERATE}`"
    );
}

/// Rewrites the configuration table of docs/configuration.md from `VARIABLES`; see
/// `the_documented_configuration_table_is_the_declared_one`.
#[test]
#[ignore = "rewrites docs/configuration.md; run it to regenerate the configuration table"]
fn regenerate_configuration_table() {
    let path = format!("{}/../../{CONFIGURATION_PAGE}", env!("CARGO_MANIFEST_DIR"));
    let page = repo_file(CONFIGURATION_PAGE);
    std::fs::write(&path, page_with_generated_table(&page))
        .unwrap_or_else(|err| panic!("writing {path}: {err}"));
}

/// The markdown pages of the repository: README.md and every page of docs/, as paths from the
/// repository's root.
fn markdown_pages() -> Vec<String> {
    let docs = format!("{}/../../docs", env!("CARGO_MANIFEST_DIR"));
    let mut pages: Vec<String> = std::fs::read_dir(&docs)
        .unwrap_or_else(|err| panic!("reading {docs}: {err}"))
        .map(|entry| entry.expect("a directory entry").file_name())
        .filter_map(|name| name.to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    pages.sort();
    pages.insert(0, "README.md".to_owned());
    pages
}

/// The lines of a markdown page outside fenced code blocks, with their line numbers.
fn prose_lines(page: &str) -> Vec<(usize, &str)> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for (index, line) in page.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            lines.push((index + 1, line));
        }
    }
    lines
}

/// The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens,
/// and `-1`, `-2`… after a repeated one.
fn anchors(page: &str) -> BTreeSet<String> {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let mut anchors = BTreeSet::new();
    for (_, line) in prose_lines(page) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let Some(text) = heading.trim_start_matches('#').strip_prefix(' ') else {
            continue;
        };
        let slug: String = text
            .replace('`', "")
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            slug.clone()
        } else {
            format!("{slug}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// The relative link targets of a page (`path`, `path#anchor` or `#anchor`), with their line numbers;
/// links with a scheme (`https:`, `mailto:`) are left out.
fn relative_links(page: &str) -> Vec<(usize, String)> {
    let mut links = Vec::new();
    for (number, line) in prose_lines(page) {
        // A link inside inline code is not one: keep only the text between code spans.
        let line: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        for (start, _) in line.match_indices("](") {
            let rest = &line[start + 2..];
            let target = &rest[..rest.find(')').unwrap_or(rest.len())];
            let scheme = target
                .split_once(':')
                .is_some_and(|(scheme, _)| scheme.chars().all(|c| c.is_ascii_alphabetic()));
            if !scheme {
                links.push((number, target.to_owned()));
            }
        }
    }
    links
}

#[test]
fn every_link_between_the_readme_and_the_docs_pages_resolves() {
    let root = std::path::PathBuf::from(format!("{}/../..", env!("CARGO_MANIFEST_DIR")));
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in markdown_pages() {
        let text = repo_file(&page);
        let directory = std::path::Path::new(&page).parent().expect("a parent");
        for (line, target) in relative_links(&text) {
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if path.is_empty() {
                root.join(&page)
            } else {
                root.join(directory).join(path)
            };
            if !linked.exists() {
                broken.push(format!("{page}:{line}: {target}: no such file"));
            } else if !anchor.is_empty()
                && linked.extension().is_some_and(|ext| ext == "md")
                && !anchors(&std::fs::read_to_string(&linked).expect("a readable page"))
                    .contains(anchor)
            {
                broken.push(format!("{page}:{line}: {target}: no such heading"));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    let page = "# Jetway\n## Jetway's events API\n```sh\n# not a heading\n```\n## Fetch, Ack and \
                Reject\n## HTTP/2 flow control\n## `jetway` CLI\n## Jetway\n";
    let expected: BTreeSet<String> = [
        "jetway",
        "jetways-events-api",
        "fetch-ack-and-reject",
        "http2-flow-control",
        "jetway-cli",
        "jetway-1",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(anchors(page), expected);
    assert_eq!(
        relative_links("[a](b.md#c) `[x](y.md)` [d](https://e) [f](#g)"),
        vec![(1, "b.md#c".to_owned()), (1, "#g".to_owned())]
    );
}

/// Runs `jetway-server healthcheck` against the health port at `addr`, as a container runtime does,
/// and returns whether it passed and what it printed on stderr.
fn healthcheck(addr: std::net::SocketAddr) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jetway-server"))
        .arg("healthcheck")
        .env_clear()
        .env("LISTEN_HOST", addr.ip().to_string())
        .env("HEALTH_PORT", addr.port().to_string())
        .output()
        .expect("run jetway-server healthcheck");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The image has no shell, so its healthcheck is the binary's own probe: it passes while the server
/// is ready and fails, naming why, once NATS is away or nothing listens.
#[tokio::test(flavor = "multi_thread")]
async fn the_healthcheck_probe_follows_readiness() {
    let mut env = crate::harness::Env::start().await;
    let addr = env.jetway.health_addr();
    let probe = || tokio::task::spawn_blocking(move || healthcheck(addr));
    let (ready, stderr) = probe().await.unwrap();
    assert!(ready, "a ready server passes: {stderr}");

    env.nats.stop();
    let stderr = jetway_testkit::eventually("the probe fails while NATS is away", || async {
        let (ready, stderr) = probe().await.unwrap();
        (!ready).then_some(stderr)
    })
    .await;
    assert!(
        stderr.contains("/readyz answered") && stderr.contains("503"),
        "{stderr}"
    );

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free.local_addr().unwrap();
    drop(free);
    let (ready, stderr) = tokio::task::spawn_blocking(move || healthcheck(closed))
        .await
        .unwrap();
    assert!(!ready);
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

#[test]
fn an_unknown_argument_is_refused() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_jetway-server"))
        .arg("--frobnicate")
        .env_clear()
        .output()
        .expect("run jetway-server");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown argument"));
}

/// The secure compose service mounts the example clients file where its AUTH_FILE points, the file
/// reads, and docs/security.md's walk-through tokens are the tenants it names.
#[test]
fn the_secure_compose_service_mounts_the_documented_clients_file() {
    let compose = compose();
    let secure = service(&compose, "jetway-secure");
    let vars = environment(&secure);
    let config = Config::from_iter(vars).expect("a valid configuration");
    let auth_file = config.auth_file.expect("AUTH_FILE is set");
    let mount = format!(
        "./deploy/compose/clients.example.json:{}:ro",
        auth_file.display()
    );
    assert!(
        strings(&secure["volumes"]).contains(&mount.as_str()),
        "{mount} in {:?}",
        secure["volumes"]
    );

    let clients = jetway_server::auth::file::Clients::parse(&repo_file(
        "deploy/compose/clients.example.json",
    ))
    .expect("the example clients file reads");
    let page = repo_file("docs/security.md");
    for (variable, client) in [("A", "tenant-a"), ("B", "tenant-b"), ("OPS", "ops")] {
        let token = page
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{variable}=")))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("docs/security.md sets {variable}"));
        let found = clients.by_token(token).map(|c| c.id.as_str());
        assert_eq!(found, Some(client), "{variable}={token}");
    }
}
