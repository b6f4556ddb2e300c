//! Config files end to end: `roo check-config` refusing bad ones with the
//! line, field and what was expected, and pipelines built from config (a
//! chain of two models, a pipeline with none, a Flight-only service).

use std::process::Stdio;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;

mod common;
use common::{example, read_ipc_dir, roo, score_sample, Daemon};

fn check_config(text: &str) -> String {
    common::check_config_refused(text)
}

#[test]
fn bad_configs_name_the_line_and_the_field() {
    let good = "[[pipeline]]\nname = \"g\"\nmodel = \"model.json\"\n\n[pipeline.source]\nkind = \"generator\"\n";
    let err = check_config(&good.replace("model = ", "modle = \"x\"\nmodel = "));
    assert!(
        err.contains("line 3") && err.contains("unknown field `modle`"),
        "{err}"
    );
    let err = check_config(&format!("{good}\n[pipeline.sink]\n"));
    assert!(err.contains("roo.toml"), "{err}");
    let err = check_config(&good.replace(
        "model = \"model.json\"",
        "model = \"model.json\"\nmax_rows = 0",
    ));
    assert!(
        err.contains("line 4") && err.contains("0 is out of range; expected 1 to 16777216"),
        "{err}"
    );
    let err = check_config(&good.replace("kind = \"generator\"", "kind = \"mqtt\""));
    assert!(
        err.contains("line 6") && err.contains("unknown variant `mqtt`"),
        "{err}"
    );
    // A Kafka source names what it lacks.
    let err = check_config(&good.replace("kind = \"generator\"", "kind = \"kafka\""));
    assert!(
        err.contains("line 5") && err.contains("missing field `brokers`"),
        "{err}"
    );
    let err = check_config(&good.replace("model.json", "missing.json"));
    assert!(
        err.contains("pipeline g") && err.contains("missing.json"),
        "{err}"
    );
    let err = check_config(&good.replace(
        "model = \"model.json\"",
        "model = \"model.json\"\nevent_time = \"when\"",
    ));
    assert!(
        err.contains("event_time \"when\": the input has no such column"),
        "{err}"
    );
    let err = check_config(&good.replace(
        "model = \"model.json\"",
        "model = \"model.json\"\nevent_time = \"amount\"",
    ));
    assert!(
        err.contains("the column is Float32; expected int64 microseconds"),
        "{err}"
    );
    // Parquet settings: named values, and only on a Parquet sink.
    let sink = |format: &str, extra: &str| {
        format!("{good}\n[[pipeline.sink]]\nkind = \"files\"\ndir = \"out\"\nformat = \"{format}\"\n{extra}\n")
    };
    let err = check_config(&sink("parquet", "compression = \"gzip\""));
    assert!(
        err.contains("compression \"gzip\": expected none, snappy, lz4 or zstd"),
        "{err}"
    );
    let err = check_config(&sink("parquet", "statistics = \"all\""));
    assert!(
        err.contains("statistics \"all\": expected none, chunk or page"),
        "{err}"
    );
    let err = check_config(&sink("arrow", "compression = \"zstd\""));
    assert!(
        err.contains("compression and statistics apply to format = \"parquet\""),
        "{err}"
    );
    // device = "gpu" where wgpu finds no adapter (here: only Metal asked for).
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example("model.json"), dir.path().join("model.json")).unwrap();
    let path = dir.path().join("roo.toml");
    std::fs::write(
        &path,
        good.replace(
            "model = \"model.json\"",
            "model = \"model.json\"\ndevice = \"gpu\"",
        ),
    )
    .unwrap();
    let out = roo()
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env("WGPU_BACKEND", "metal")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pipeline g") && err.contains("device = \"gpu\": no GPU"),
        "{err}"
    );
    let err = check_config(&good.replace(
        "kind = \"generator\"",
        "kind = \"tcp\"\nlisten = \"127.0.0.1:0\"\nformat = \"csv\"\ncolumns = [\"amount\"]",
    ));
    assert!(
        err.contains("does not fit the input") && err.contains("amount_log"),
        "{err}"
    );
    let err = check_config(&format!("{good}\n{}", good));
    assert!(err.contains("two pipelines are named \"g\""), "{err}");
    let shadow = |name: &str| {
        format!("{good}\n[[pipeline.shadow]]\nname = \"{name}\"\nmodel = \"model.json\"\n")
    };
    let err = check_config(&shadow("has space"));
    assert!(
        err.contains("[[pipeline.shadow]] name \"has space\": expected letters, digits or '_'"),
        "{err}"
    );
    let err = check_config(&format!(
        "{}[[pipeline.shadow]]\nname = \"s\"\nmodel = \"model.json\"\n",
        shadow("s")
    ));
    assert!(
        err.contains("two [[pipeline.shadow]] are named \"s\""),
        "{err}"
    );
    let err = check_config(&shadow("s").replacen("model = \"model.json\"\n", "", 1));
    assert!(err.contains("needs the pipeline's own model"), "{err}");
    let err = check_config(&shadow("s").replace(
        "name = \"s\"\nmodel = \"model.json\"",
        "name = \"s\"\nmodel = \"missing.json\"",
    ));
    assert!(
        err.contains("pipeline g: shadow \"s\"") && err.contains("missing.json"),
        "{err}"
    );
    let err = check_config("[server]\nthreads = 1\n");
    assert!(
        err.contains("no [[pipeline]] and no [flight]: nothing to run"),
        "{err}"
    );
}

/// From config: a pipeline whose chain scores twice (the model, and the
/// same model as a shadow writing `score_again`), and a pipeline with no
/// model that passes its rows through; and a config with a Flight endpoint
/// and no pipeline is a scoring service of its own.
#[test]
fn a_config_builds_chains_of_two_models_and_of_none() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roo.toml");
    std::fs::write(
        &config,
        format!(
            "[[pipeline]]\nname = \"twice\"\nmodel = {model:?}\nmax_rows = 300\n\n\
             [pipeline.source]\nkind = \"file\"\npath = {input:?}\n\n\
             [[pipeline.sink]]\nkind = \"files\"\ndir = \"twice\"\nformat = \"arrow\"\n\n\
             [[pipeline.shadow]]\nname = \"again\"\nmodel = {model:?}\n\n\
             [[pipeline]]\nname = \"bare\"\n\n\
             [pipeline.source]\nkind = \"file\"\npath = {input:?}\n\n\
             [[pipeline.sink]]\nkind = \"files\"\ndir = \"bare\"\nformat = \"arrow\"\n",
            model = example("model.json"),
            input = example("transactions.csv")
        ),
    )
    .unwrap();
    let checked = roo()
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{said}");
    assert!(
        said.contains("pipeline twice: ok (model ") && said.contains(", shadow again sha256:"),
        "{said}"
    );
    assert!(said.contains("pipeline bare: ok (no model)"), "{said}");
    let daemon = Daemon::start(&config, Stdio::null());
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let twice = read_ipc_dir(&dir.path().join("twice"));
    let names: Vec<String> = twice[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names[names.len() - 4..],
        [
            "score",
            "model_version",
            "score_again",
            "model_version_again"
        ]
    );
    let column = |name: &str| -> Vec<f32> {
        twice
            .iter()
            .flat_map(|b| {
                b.column_by_name(name)
                    .unwrap()
                    .as_primitive::<Float32Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    };
    assert_eq!(column("score").len(), 2000);
    assert_eq!(
        column("score"),
        column("score_again"),
        "the same model twice"
    );
    assert_eq!(
        column("score"),
        score_sample("cpu", &dir.path().join("cpu.arrow"))
    );
    let bare = read_ipc_dir(&dir.path().join("bare"));
    assert_eq!(bare.iter().map(|b| b.num_rows()).sum::<usize>(), 2000);
    assert!(
        bare[0].column_by_name("score").is_none(),
        "no model, no score"
    );
    assert_eq!(bare[0].schema().field(0).name(), "txn_id");

    let service = dir.path().join("service.toml");
    std::fs::write(&service, "[flight]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let mut daemon = Daemon::start(&service, Stdio::null());
    assert!(daemon.ready().flight.is_some());
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
}

#[test]
fn safe_defaults_flight_needs_a_token_beyond_loopback_and_metrics_bind_loopback() {
    let service = "[flight]\nlisten = \"0.0.0.0:0\"\n";
    let err = check_config(service);
    assert!(
        err.contains("0.0.0.0:0 is reachable from other machines")
            && err.contains("allow_anonymous = true"),
        "{err}"
    );
    // Said in so many words, or with a token, or on loopback, it starts.
    let accepted = common::check_config_accepted;
    accepted(&format!("{service}allow_anonymous = true\n"));
    // The online endpoints (which take the Flight tokens) alike.
    let online = "[flight]\nlisten = \"127.0.0.1:0\"\n[online]\nhttp = \"0.0.0.0:0\"\n";
    let err = check_config(online);
    assert!(
        err.contains("online: http 0.0.0.0:0 is reachable from other machines")
            && err.contains("allow_anonymous = true"),
        "{err}"
    );
    accepted(&format!("{online}allow_anonymous = true\n"));
    accepted("[flight]\nlisten = \"127.0.0.1:0\"\n[online]\ngrpc = \"127.0.0.1:0\"\n");
    accepted("[flight]\nlisten = \"127.0.0.1:0\"\n");
    accepted(&format!(
        "{service}[[flight.token]]\nname = \"a\"\nsecret = \"0123456789abcdef0123\"\n"
    ));

    // A port alone: /metrics on loopback.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roo.toml");
    std::fs::write(
        &path,
        format!("[server]\nmetrics = \"{port}\"\n[flight]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let mut daemon = Daemon::start(&path, Stdio::null());
    assert_eq!(
        daemon.ready().metrics.as_deref(),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    daemon.signal(libc::SIGTERM);
    let (code, lines) = daemon.finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
}
