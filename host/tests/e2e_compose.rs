//! docker-compose.yml, Dockerfile and Dockerfile.dev checked against the binary, then the two
//! compose services run as processes. No Docker engine is involved: the compose commands and
//! environment are run directly, with the container paths mapped onto a temporary directory and
//! the published port onto a free port of 127.0.0.1.

mod e2e_support;

use clap::CommandFactory;
use e2e_support::{Client, Jobhost, TestDirs, is_finished_status};
use jobhost::config::{Cli, environment_variables};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

fn repo_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

fn read_repo_file(name: &str) -> String {
    let path = repo_path(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// One service of docker-compose.yml, with `${NAME:-default}` expanded as compose does when
/// NAME is unset.
#[derive(Debug)]
struct Service {
    command: Vec<String>,
    environment: Vec<(String, String)>,
    /// (host path, container path) of each bind mount.
    volumes: Vec<(String, String)>,
    ports: Vec<String>,
    healthcheck: Vec<String>,
}

impl Service {
    fn env(&self, name: &str) -> Option<&str> {
        self.environment
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn container_path(&self, host_path: &str) -> Option<&str> {
        self.volumes
            .iter()
            .find(|(host, _)| host == host_path)
            .map(|(_, container)| container.as_str())
    }
}

/// Expands `${NAME:-default}`, `${NAME-default}` and `${NAME}` with NAME unset.
fn expand_unset(value: &str) -> String {
    let mut expanded = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        expanded.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing brace") + start;
        let inner = &rest[start + 2..end];
        let default = inner
            .split_once(":-")
            .or_else(|| inner.split_once('-'))
            .map_or("", |(_, default)| default);
        expanded.push_str(default);
        rest = &rest[end + 1..];
    }
    expanded.push_str(rest);
    expanded
}

fn yaml_text(value: &Yaml) -> String {
    match value {
        Yaml::String(text) | Yaml::Real(text) => text.clone(),
        Yaml::Integer(number) => number.to_string(),
        Yaml::Boolean(flag) => flag.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn yaml_list(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::Array(items) => items.iter().map(yaml_text).collect(),
        Yaml::String(text) => text.split_whitespace().map(str::to_string).collect(),
        Yaml::BadValue => Vec::new(),
        other => panic!("expected a list, got {other:?}"),
    }
}

fn compose_services() -> Vec<(String, Service)> {
    let documents = YamlLoader::load_from_str(&read_repo_file("docker-compose.yml"))
        .expect("docker-compose.yml is YAML");
    let services = documents[0]["services"].as_hash().expect("a services map");
    services
        .iter()
        .map(|(name, service)| {
            let environment = match &service["environment"] {
                Yaml::Hash(map) => map
                    .iter()
                    .map(|(key, value)| (yaml_text(key), expand_unset(&yaml_text(value))))
                    .collect(),
                Yaml::Array(items) => items
                    .iter()
                    .map(|item| {
                        let text = yaml_text(item);
                        let (key, value) = text.split_once('=').unwrap_or((&text, ""));
                        (key.to_string(), expand_unset(value))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let volumes = yaml_list(&service["volumes"])
                .into_iter()
                .map(|volume| {
                    let mut parts = volume.split(':');
                    let host = parts.next().expect("host path").to_string();
                    let container = parts.next().expect("container path").to_string();
                    (host, container)
                })
                .collect();
            let service = Service {
                command: yaml_list(&service["command"]),
                environment,
                volumes,
                ports: yaml_list(&service["ports"]),
                healthcheck: yaml_list(&service["healthcheck"]["test"]),
            };
            (yaml_text(name), service)
        })
        .collect()
}

fn service<'a>(services: &'a [(String, Service)], name: &str) -> &'a Service {
    services
        .iter()
        .find(|(service_name, _)| service_name == name)
        .map(|(_, service)| service)
        .unwrap_or_else(|| panic!("docker-compose.yml has no {name} service"))
}

fn is_subcommand(name: &str) -> bool {
    Cli::command().find_subcommand(name).is_some()
}

/// Returns the port and path of the first `http://127.0.0.1:<port>/<path>` in `words`.
fn health_url(words: &[String]) -> (u16, String) {
    let url = words
        .iter()
        .find_map(|word| word.strip_prefix("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no http://127.0.0.1 URL in {words:?}"));
    let (port, path) = url.split_once('/').expect("a path after the port");
    (port.parse().expect("a port number"), format!("/{path}"))
}

fn port_of(listen_addr: &str) -> u16 {
    listen_addr
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {listen_addr:?}"))
}

#[test]
fn compose_services_match_the_binary() {
    let services = compose_services();
    let web = service(&services, "web");
    let worker = service(&services, "worker");
    assert_eq!(web.command, ["serve"]);
    assert_eq!(worker.command, ["worker"]);

    for (name, service) in &services {
        let subcommand = service.command.first().expect("a command");
        assert!(
            is_subcommand(subcommand),
            "{name}: {subcommand} is not a jobhost subcommand"
        );
        let known = environment_variables(subcommand);
        for (key, _) in &service.environment {
            assert!(
                known.contains(key),
                "{name} sets {key}, which `jobhost {subcommand}` does not read"
            );
        }
    }

    // Both services share the data directory and the plugins directory.
    let data_path = web.container_path("./data").expect("web mounts ./data");
    assert_eq!(worker.container_path("./data"), Some(data_path));
    assert_eq!(web.env("DATA_DIR"), Some(data_path));
    assert_eq!(worker.env("DATA_DIR"), Some(data_path));
    let plugins_path = worker
        .container_path("./plugins")
        .expect("worker mounts ./plugins");
    assert_eq!(web.container_path("./plugins"), Some(plugins_path));
    let plugin_dirs: Vec<&str> = worker
        .env("PLUGINS_DIR")
        .expect("worker sets PLUGINS_DIR")
        .split(':')
        .collect();
    assert!(plugin_dirs.contains(&plugins_path), "{plugin_dirs:?}");
    assert!(
        plugin_dirs.contains(&"/usr/share/jobhost/plugins"),
        "{plugin_dirs:?}"
    );

    // The web health check and published port match the listen address and a real route.
    let listen_port = port_of(web.env("LISTEN_ADDR").expect("web sets LISTEN_ADDR"));
    assert!(
        web.ports
            .iter()
            .any(|port| port.ends_with(&format!(":{listen_port}"))),
        "{:?}",
        web.ports
    );
    let (health_port, health_path) = health_url(&web.healthcheck);
    assert_eq!(health_port, listen_port);
    assert!(
        jobhost::api::route_paths().contains(&health_path.as_str()),
        "{health_path} is not a route"
    );
    let worker_check = worker.healthcheck.join(" ");
    assert!(
        worker_check.contains(&format!("{data_path}/workers")),
        "the worker health check reads its record: {worker_check}"
    );
}

/// Dockerfile instructions with line continuations joined: (keyword, arguments).
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (keyword, arguments) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((keyword.to_uppercase(), arguments.trim().to_string()));
                current.clear();
            }
        }
    }
    instructions
}

fn env_pairs(arguments: &str) -> Vec<(String, String)> {
    arguments
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn exec_form(arguments: &str) -> Vec<String> {
    serde_json::from_str(arguments)
        .unwrap_or_else(|error| panic!("{arguments:?} is not an exec-form array: {error}"))
}

#[test]
fn dockerfiles_match_the_binary() {
    let known = environment_variables("up");
    let instructions = dockerfile_instructions(&read_repo_file("Dockerfile"));
    let find_all = |keyword: &str| -> Vec<String> {
        instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, arguments)| arguments.clone())
            .collect()
    };

    let environment: Vec<(String, String)> =
        find_all("ENV").iter().flat_map(|a| env_pairs(a)).collect();
    for (key, _) in &environment {
        assert!(
            known.contains(key),
            "Dockerfile sets {key}, which jobhost does not read"
        );
    }
    let env = |name: &str| {
        environment
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| panic!("Dockerfile does not set {name}"))
    };

    assert_eq!(exec_form(&find_all("ENTRYPOINT")[0]), ["jobhost"]);
    let command = exec_form(&find_all("CMD").last().cloned().expect("a CMD"));
    assert!(is_subcommand(&command[0]), "CMD {command:?}");

    // The bundled plugins are copied to the first plugins directory.
    let plugin_dirs = env("PLUGINS_DIR");
    let bundled = plugin_dirs.split(':').next().expect("a plugins directory");
    assert!(
        find_all("COPY")
            .iter()
            .any(|copy| copy.starts_with("--from=builder")
                && copy.trim_end_matches('/').ends_with(bundled)),
        "no COPY of the bundled plugins into {bundled}"
    );
    assert!(
        find_all("RUN")
            .iter()
            .any(|run| run.contains("rustup target add wasm32-wasip2")),
        "the builder installs the wasm32-wasip2 target"
    );
    assert!(
        find_all("RUN")
            .iter()
            .any(|run| run.contains("cargo build --release")),
        "the builder runs cargo build --release"
    );
    assert!(
        find_all("USER")
            .iter()
            .any(|user| user != "root" && user != "0"),
        "the runtime stage runs as a non-root user"
    );

    let healthcheck = find_all("HEALTHCHECK")
        .first()
        .cloned()
        .expect("a HEALTHCHECK");
    let check = healthcheck
        .split_once("CMD ")
        .map(|(_, check)| exec_form(check))
        .expect("HEALTHCHECK ... CMD [..]");
    let (port, path) = health_url(&check);
    assert_eq!(port, port_of(&env("LISTEN_ADDR")));
    assert!(
        jobhost::api::route_paths().contains(&path.as_str()),
        "{path}"
    );

    let toolchain = read_repo_file("rust-toolchain.toml");
    assert!(toolchain.contains("wasm32-wasip2"), "{toolchain}");

    let dev = dockerfile_instructions(&read_repo_file("Dockerfile.dev"));
    for (keyword, arguments) in &dev {
        if keyword == "ENV" {
            for (key, _) in env_pairs(arguments) {
                assert!(
                    known.contains(&key),
                    "Dockerfile.dev sets {key}, which jobhost does not read"
                );
            }
        }
    }
    let dev_command = dev
        .iter()
        .rev()
        .find(|(keyword, _)| keyword == "CMD")
        .map(|(_, arguments)| exec_form(arguments))
        .expect("a CMD in Dockerfile.dev");
    assert_eq!(dev_command[..3], ["cargo", "run", "--"]);
    assert!(is_subcommand(&dev_command[3]), "{dev_command:?}");
}

/// Maps a compose environment onto the test directories: container paths to temporary
/// directories and the listen address to a free port of 127.0.0.1.
fn as_refs(envs: &[(String, String)]) -> Vec<(&str, String)> {
    envs.iter()
        .map(|(key, value)| (key.as_str(), value.clone()))
        .collect()
}

fn local_environment(service: &Service, paths: &[(&str, &Path)]) -> Vec<(String, String)> {
    service
        .environment
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| {
            let value = if key == "LISTEN_ADDR" {
                "127.0.0.1:0".to_string()
            } else {
                value
                    .split(':')
                    .map(|part| {
                        paths
                            .iter()
                            .find(|(container, _)| *container == part)
                            .map_or(part.to_string(), |(_, local)| local.display().to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(":")
            };
            (key.clone(), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_services_run_a_debate() {
    let services = compose_services();
    let web = service(&services, "web");
    let worker = service(&services, "worker");

    let dirs = TestDirs::new();
    let user_plugins = dirs.root.path().join("user-plugins");
    std::fs::create_dir_all(&user_plugins).expect("user plugins dir");
    let paths: Vec<(&str, &Path)> = vec![
        (
            web.container_path("./data").expect("data mount"),
            &dirs.data_dir,
        ),
        (
            web.container_path("./plugins").expect("plugins mount"),
            &user_plugins,
        ),
        ("/usr/share/jobhost/plugins", &dirs.plugins_dir),
    ];

    let web_env = local_environment(web, &paths);
    let web_args: Vec<&str> = web.command.iter().map(String::as_str).collect();
    let mut web_process = Jobhost::start("web", dirs.root.path(), &web_args, &as_refs(&web_env));
    let base = web_process.wait_for_api();

    let worker_env = local_environment(worker, &paths);
    let worker_args: Vec<&str> = worker.command.iter().map(String::as_str).collect();
    let mut worker_process = Jobhost::start(
        "worker",
        dirs.root.path(),
        &worker_args,
        &as_refs(&worker_env),
    );
    worker_process.wait_for_message("worker started");

    let client = Client::new(&base);
    let (_, health_path) = health_url(&web.healthcheck);
    let (status, health) = client.get(&health_path).await;
    assert_eq!(status, 200, "{health}");

    let (status, accepted) = client
        .post(
            "/api/debates",
            &json!({ "topic": "Should the office have a quiet floor?" }),
            None,
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let debate_id = accepted["debateId"].as_str().expect("debateId");
    let debate = client
        .wait_for(&format!("/api/debates/{debate_id}"), |body: &Value| {
            is_finished_status(body)
        })
        .await;
    assert_eq!(debate["status"], "completed", "{debate}");
    let (status, transcript) = client
        .get_text(&format!("/api/debates/{debate_id}/transcript"))
        .await;
    assert_eq!(status, 200, "{transcript}");
    assert!(transcript.contains("quiet floor"), "{transcript}");

    assert!(
        worker_process.terminate().success(),
        "{}",
        worker_process.log()
    );
    assert!(web_process.terminate().success(), "{}", web_process.log());
}

#[test]
fn expand_unset_uses_defaults() {
    assert_eq!(expand_unset("${A:-x}"), "x");
    assert_eq!(expand_unset("${A-y}"), "y");
    assert_eq!(expand_unset("${A}"), "");
    assert_eq!(expand_unset("pre-${A:-1}-post"), "pre-1-post");
    assert_eq!(expand_unset("plain"), "plain");
}
