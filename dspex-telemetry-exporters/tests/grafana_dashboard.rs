//! The generated Grafana dashboard: the committed file is what the code generates, every query
//! names only series the metric catalog produces, the layout fits Grafana's grid, and the JSON
//! type-checks against Grafana's published dashboard types (`@grafana/schema`, compiled with
//! `tsc --strict`, so unknown or mistyped fields fail).

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use dspex_telemetry_exporters::grafana;
use dspex_telemetry_metrics::catalog;
use serde_json::Value;

const COMMITTED: &str = include_str!("../../telemetry/grafana_dashboard.json");

fn generated() -> Value {
    grafana::dashboard(&catalog::dspex_metrics())
}

#[test]
fn the_committed_dashboard_is_what_the_code_generates() {
    let text = serde_json::to_string_pretty(&generated()).unwrap() + "\n";
    assert!(
        COMMITTED == text,
        "telemetry/grafana_dashboard.json is out of date: run `cargo xtask dashboard`"
    );
}

#[test]
fn every_query_names_only_series_the_catalog_produces() {
    let dashboard = generated();
    let names = grafana::exposition_names(&catalog::dspex_metrics());
    let queries = grafana::queries(&dashboard);
    assert!(queries.len() >= 30, "{} queries", queries.len());
    let mut used = BTreeSet::new();
    for expr in &queries {
        let series = grafana::series_in(expr);
        assert!(!series.is_empty(), "no series in {expr}");
        for s in series {
            assert!(
                names.contains(&s),
                "{s} (in {expr}) is not a series of the catalog"
            );
            used.insert(s);
        }
    }
    // The spec's panels are all there.
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for wanted in [
        "Bridge calls latency p50 / p95 / p99",
        "Tool executions latency p50 / p95 / p99",
        "Error rate by operation",
        "Workers by state",
        "Active sessions and session lifetime",
        "Requests by method",
        "Contract validation latency p50 / p95 / p99",
        "Alerts",
        "Throughput",
        "Language-model calls per second",
        "Language-model calls latency p50 / p95 / p99",
        "Language-model call error rate",
        "Language-model tokens per second",
        "Memory",
        "CPU use",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }
    // Every metric family of the catalog is shown somewhere.
    for def in catalog::dspex_metrics() {
        assert!(
            used.iter().any(|s| s.starts_with(def.name())),
            "{} is on no panel",
            def.name()
        );
    }
}

#[test]
fn panels_have_unique_ids_and_fit_the_grid() {
    let dashboard = generated();
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len());
    let mut cells = BTreeSet::new();
    for p in panels {
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{p}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "panels overlap at {cx},{cy}: {}",
                    p["title"]
                );
            }
        }
        if p["type"] != "row" {
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{}", p["title"]);
            let refs: BTreeSet<&str> = targets
                .iter()
                .map(|t| t["refId"].as_str().unwrap())
                .collect();
            assert_eq!(refs.len(), targets.len(), "refIds repeat in {}", p["title"]);
        }
    }
}

#[test]
fn the_dashboard_type_checks_against_grafanas_published_schema() {
    let peers = std::env::var_os("DSPEX_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-peers"));
    let tsc = peers.join("node_modules/typescript/bin/tsc");
    let schema = peers.join("node_modules/@grafana/schema/package.json");
    assert!(
        tsc.is_file() && schema.is_file(),
        "no TypeScript compiler or @grafana/schema under {} (`cargo xtask test` installs npm typescript and @grafana/schema there)",
        peers.display()
    );
    let node = support::which("node").expect("the `node` binary is needed to run tsc");
    // Under the peers folder, so that `@grafana/schema` resolves from its node_modules.
    let dir = peers.join(format!("dashboard-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dashboard = generated();
    let targets: Vec<&Value> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .collect();
    let check = |name: &str, dashboard: &Value| -> (bool, String) {
        // The schema types a thresholds mode as a TypeScript string enum, which no string
        // literal is assignable to: the JSON's "absolute" is written as the enum's member,
        // and a type assertion pins that member's value to "absolute".
        let json = serde_json::to_string_pretty(dashboard).unwrap().replace(
            "\"mode\": \"absolute\"",
            "\"mode\": ThresholdsMode.Absolute",
        );
        let source = format!(
            "import {{ type Dashboard, type DataQuery, ThresholdsMode }} from \"@grafana/schema\";\n\
             const absolute: `${{ThresholdsMode.Absolute}}` = \"absolute\";\n\
             export {{ absolute }};\n\
             type PrometheusQuery = DataQuery & {{ expr: string; legendFormat?: string; range?: boolean; instant?: boolean; format?: string }};\n\
             export const dashboard: Dashboard = {};\n\
             export const queries: PrometheusQuery[] = {};\n",
            json,
            serde_json::to_string_pretty(&targets).unwrap()
        );
        std::fs::write(dir.join(format!("{name}.ts")), source).unwrap();
        let config = serde_json::json!({
            "compilerOptions": {
                "strict": true, "noEmit": true, "module": "esnext", "moduleResolution": "bundler",
                "target": "es2022", "skipLibCheck": true
            },
            "files": [format!("{name}.ts")]
        });
        std::fs::write(dir.join(format!("{name}.json")), config.to_string()).unwrap();
        let out = Command::new(&node)
            .arg(&tsc)
            .args(["-p", &format!("{name}.json")])
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = check("dashboard", &dashboard);
    assert!(
        ok,
        "tsc finds the dashboard does not match @grafana/schema:\n{text}"
    );
    // The check can fail: a mistyped field and an unknown one are caught.
    let mut bad = dashboard.clone();
    bad["schemaVersion"] = Value::from("39");
    bad["panels"][1]["gridPos"]["width"] = Value::from(3);
    let (ok, text) = check("bad", &bad);
    assert!(!ok, "tsc accepted a broken dashboard");
    assert!(
        text.contains("schemaVersion") || text.contains("not assignable"),
        "{text}"
    );
    assert!(text.contains("width"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
