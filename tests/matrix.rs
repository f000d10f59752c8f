//! The suite runs on both transports, reqwest (the default) and the lean
//! hyper-util one: `scripts/test` runs the integration tests once per
//! transport (`COURIER_TEST_TRANSPORT=hyper` for the second run), and every
//! test builds its clients with `support::builder`, which reads that choice.
//! These cases keep the matrix honest: a client built around the helper
//! would quietly test reqwest twice.

use std::path::Path;

use courier::{Error, client};

mod support;

/// Test files whose clients stay on reqwest, and why.
const NOT_IN_THE_MATRIX: [(&str, &str); 5] = [
    (
        "etcd.rs",
        "etcd discovery (which instances exist, leases, watches); a balanced send runs on \
         both transports in discovery.rs",
    ),
    ("dns.rs", "DNS discovery, as for etcd"),
    ("ui.rs", "compile-fail cases: nothing is built or sent"),
    (
        "hyper_transport.rs",
        "the lean transport's own settings, on it by construction",
    ),
    (
        "dashboard_browser.rs",
        "the dashboard's page in a browser; the data it shows runs on both transports in \
         dashboard.rs",
    ),
];

/// The comment that lets one builder line in a matrix file pick its
/// transport itself; the rest of the comment says why.
const MARKER: &str = "// not the matrix:";

#[test]
fn every_test_client_is_built_on_the_transport_under_test() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let entries = std::fs::read_dir(&dir).expect("tests/ is readable");
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    let mut strays = Vec::new();
    let mut checked = 0;
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "matrix.rs" || NOT_IN_THE_MATRIX.iter().any(|(n, _)| *n == name) {
            continue;
        }
        checked += 1;
        let text = std::fs::read_to_string(file).expect("a test file is readable");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let marked = i > 0 && lines[i - 1].contains(MARKER);
            if line.contains("Client::builder()") && !marked {
                strays.push(format!("{name}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(checked >= 15, "only {checked} test files were checked");
    assert!(
        strays.is_empty(),
        "build test clients with `support::builder::<XClient>()` so they run on the \
         transport under test (or put `{MARKER} <why>` on the line before):\n{}",
        strays.join("\n")
    );
}

#[test]
fn scripts_test_leaves_out_of_the_second_run_exactly_the_files_listed_here() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test");
    let script = std::fs::read_to_string(script).expect("scripts/test is readable");
    let case = script
        .lines()
        .find(|line| line.contains("case \"$name\" in"))
        .expect("scripts/test picks the files of the second run with a `case`");
    let names = case
        .split_once(" in ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map_or("", |(names, _)| names);
    let mut left_out: Vec<String> = names
        .split('|')
        .map(|n| format!("{}.rs", n.trim()))
        .collect();
    let mut listed: Vec<String> = NOT_IN_THE_MATRIX
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    left_out.sort();
    listed.sort();
    assert_eq!(left_out, listed);
}

#[client(name = "probe")]
#[allow(dead_code)] // only built: its Debug names the transport
trait Probe {
    #[get("/")]
    async fn root(&self) -> Result<(), Error>;
}

#[test]
fn the_transport_under_test_is_the_one_a_client_gets() {
    let client = support::builder::<ProbeClient>()
        .base_url("http://127.0.0.1:9")
        .build()
        .expect("valid");
    let shown = format!("{client:?}");
    let expected = match support::transport() {
        support::Transport::Reqwest => "transport: reqwest",
        support::Transport::Hyper => "transport: hyper-util",
    };
    assert!(shown.contains(expected), "{shown}");
}
