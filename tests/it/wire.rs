//! `cargo portguard init --wire` on the hello worlds of std, tokio, axum and actix-web as their
//! projects show them (tests/fixtures/init): the wired server runs with `cargo dev-safe
//! --detach`, answers as the hello world does, and goes with `cargo stop`; and every snippet
//! init prints instead compiles once pasted as its note says. All build into one kept target
//! dir, the one the axum test of `scaffold_run.rs` uses, so axum and tokio compile once.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::support::{
    COMMAND_TIMEOUT, Finished, TestProject, kept_target_dir, process_alive, run_within, wait_until,
    wait_until_port_free,
};

/// Covers compiling axum or actix-web from nothing on two busy cores, waiting for the other
/// builds into the same target dir included.
const BUILD_TIMEOUT: Duration = Duration::from_mins(30);

fn assert_exit(run: &Finished, code: i32) {
    assert_eq!(run.code(), Some(code), "{}", run.describe());
}

fn project(fixture: &str) -> TestProject {
    let project =
        TestProject::init_fixture(fixture).with_target_dir(kept_target_dir("init-axum-target"));
    project.set_metadata_on_free_port("");
    project
}

/// `request` to 127.0.0.1:port, and what comes back until `enough` says so or the server
/// closes.
fn exchange(port: u16, request: &[u8], enough: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request).expect("send the request");
    let mut answer = Vec::new();
    let mut chunk = [0_u8; 4096];
    while !enough(&answer) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    answer
}

fn http_get(port: u16, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    String::from_utf8_lossy(&exchange(port, request.as_bytes(), |_| false)).into_owned()
}

/// `init --wire`, then `cargo dev-safe --detach` as a user types it; `check` gets the port.
fn wired_server_runs(fixture: &str, main_after: &[&str], check: impl FnOnce(u16)) {
    let project = project(fixture);
    let init = project.init(&["--wire"]);
    assert_exit(&init, 0);
    let main = project.read_file("src/main.rs");
    for line in main_after {
        assert!(
            main.contains(line),
            "no {line:?} in the wired main:\n{main}"
        );
    }
    assert!(
        init.stderr.trim_end().ends_with("; run `cargo dev-safe`"),
        "{}",
        init.describe()
    );

    let detach = run_within(project.user_cargo(&["dev-safe", "--detach"]), BUILD_TIMEOUT);
    assert_exit(&detach, 0);
    // A diagnostic about the project's own code points into src/: the wired main has none.
    assert!(
        !detach.stderr.contains("--> src/"),
        "the wired main compiles without warnings:\n{}",
        detach.stderr
    );
    let port: u16 = detach
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no port: {}", detach.describe()));
    // The package is named after its fixture, and so is the instance.
    let pid = project.read_pid(fixture).expect("a pid file");
    // Whatever `check` finds, the server is stopped.
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(port)));
    let stop = run_within(project.user_cargo(&["stop"]), COMMAND_TIMEOUT);
    assert_exit(&stop, 0);
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(pid)),
        "the server (pid {pid}) outlived `cargo stop`"
    );
    assert!(wait_until_port_free(port, Duration::from_secs(10)));
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn the_axum_hello_world_is_wired_and_runs() {
    wired_server_runs(
        "axum-hello",
        &[
            "mod portguard;\n\nuse axum::{",
            "    let listener = portguard::listener().await.unwrap();\n    portguard::notify_ready();\n    axum::serve(listener, app).await.unwrap();\n",
        ],
        |port| {
            let answer = http_get(port, "/");
            assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
            assert!(answer.ends_with("\r\n\r\nHello, World!"), "{answer}");
        },
    );
}

#[test]
fn the_actix_web_hello_world_is_wired_and_runs() {
    wired_server_runs(
        "actix-hello",
        &[
            "    portguard::notify_ready();\n    HttpServer::new(|| {\n        App::new().service(greet)\n    })\n    .listen(portguard::listener()?)?\n    .run()\n",
        ],
        |port| {
            let answer = http_get(port, "/hello/portguard");
            assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
            assert!(answer.ends_with("\r\n\r\nHello portguard!"), "{answer}");
        },
    );
}

#[test]
fn the_tokio_echo_server_is_wired_and_runs() {
    wired_server_runs(
        "tokio-echo",
        &["    let listener = portguard::listener().await?;\n    portguard::notify_ready();\n"],
        |port| {
            let request = b"GET / HTTP/1.0\r\n\r\n";
            let answer = exchange(port, request, |got| got.len() >= request.len());
            assert_eq!(answer, request);
        },
    );
}

#[test]
fn the_std_hello_world_is_wired_and_runs() {
    wired_server_runs(
        "std-hello",
        &[
            "mod portguard;\n\nuse std::io",
            "    let listener = portguard::listener()?;\n    portguard::notify_ready();\n",
        ],
        |port| {
            let answer = http_get(port, "/");
            assert!(answer.ends_with("\r\n\r\nHello, World!\n"), "{answer}");
        },
    );
}

/// Without `--wire`, init prints the diff `--wire` applies, on stdout, and says that the
/// server will listen on 127.0.0.1 rather than 0.0.0.0; main.rs is not touched.
#[test]
fn without_wire_the_diff_and_the_host_change_are_printed() {
    let project = project("axum-hello");
    let main = project.read_file("src/main.rs");
    let init = project.init(&[]);
    assert_exit(&init, 0);
    assert_eq!(project.read_file("src/main.rs"), main);
    assert!(
        init.stdout.starts_with("--- a/src/main.rs\n+++ b/src/main.rs\n")
            && init.stdout.contains(
                "-    let listener = tokio::net::TcpListener::bind(\"0.0.0.0:3000\").await.unwrap();\n\
                 +    let listener = portguard::listener().await.unwrap();\n\
                 +    portguard::notify_ready();\n"
            ),
        "{}",
        init.describe()
    );
    let notes: Vec<&str> = init
        .stderr
        .lines()
        .filter(|line| line.starts_with("note:"))
        .collect();
    assert_eq!(
        notes,
        [
            "note: one step is left: `src/main.rs` binds its own port; `cargo portguard init --wire` makes this change:",
            "note: `src/main.rs` bound \"0.0.0.0:3000\", every interface; the server then listens on portguard's `host`, 127.0.0.1 (set `host = \"0.0.0.0\"` in [package.metadata.portguard] to listen on every interface)",
        ],
        "{}",
        init.describe()
    );
    assert!(
        init.stderr
            .trim_end()
            .ends_with("once `main` uses it, run `cargo dev-safe`"),
        "{}",
        init.describe()
    );

    // The printed diff is what `--wire` then does.
    let wire = project.init(&["--wire"]);
    assert_exit(&wire, 0);
    let wired = project.read_file("src/main.rs");
    assert_eq!(
        crate::support::unified_diff("src/main.rs", Some(&main), &wired),
        init.stdout
    );
    // Once wired, nothing is left.
    let again = project.init(&[]);
    assert_exit(&again, 0);
    assert_eq!(again.stdout, "");
    assert!(
        again.stderr.contains("nothing to do"),
        "{}",
        again.describe()
    );
}

/// The snippet init prints when `main` binds twice, pasted as its note says: the `mod` line
/// at the top, the statements in place of the first bind (for actix-web, `.listen(...)` in
/// place of the first `.bind(...)`, and `notify_ready()` before the server).
fn snippet_compiles(fixture: &str, bind: &str, second: &str) {
    let project = project(fixture);
    let main = project.read_file("src/main.rs");
    let two = main.replacen(bind, &format!("{bind}{second}"), 1);
    assert_ne!(two, main, "{bind:?} is in the hello world");
    project.write_file("src/main.rs", &two);
    let init = project.init(&[]);
    assert_exit(&init, 0);
    assert_eq!(
        project.read_file("src/main.rs"),
        two,
        "main.rs is left alone"
    );
    assert!(
        init.stderr.contains("its `main` has 2 "),
        "{}",
        init.describe()
    );
    let snippet: Vec<&str> = init
        .stderr
        .lines()
        .skip_while(|line| !line.contains("add to it:"))
        .skip(1)
        .take_while(|line| line.starts_with("    ") && !line.starts_with("    Finished"))
        .map(|line| &line[4..])
        .collect();
    let (top, body) = snippet.split_at(
        snippet
            .iter()
            .position(|line| line.starts_with("// in main()"))
            .unwrap_or_else(|| panic!("no `// in main()` line: {snippet:?}")),
    );
    let code: Vec<&str> = body[1..]
        .iter()
        .copied()
        .filter(|line| !line.starts_with("//"))
        .collect();
    let pasted = if fixture == "actix-hello" {
        let [listen, notify] = code.as_slice() else {
            panic!("not a `.listen(...)` and a `notify_ready()`: {code:?}")
        };
        two.replacen(bind, listen, 1).replacen(
            "    HttpServer::new",
            &format!("    {notify}\n    HttpServer::new"),
            1,
        )
    } else {
        let line = two
            .lines()
            .find(|line| line.contains(bind))
            .expect("the bind's line");
        two.replacen(line, &code.join("\n"), 1)
    };
    let pasted = format!("{}\n{pasted}", top.join("\n"));
    project.write_file("src/main.rs", &pasted);
    let check = run_within(
        project.command(crate::support::cargo_bin(), &["check"]),
        BUILD_TIMEOUT,
    );
    assert_exit(&check, 0);
    assert!(
        !check.stderr.contains("error:"),
        "{pasted}\n{}",
        check.stderr
    );
}

#[test]
fn the_several_binds_snippet_compiles_in_each_hello_world() {
    snippet_compiles(
        "axum-hello",
        "tokio::net::TcpListener::bind(\"0.0.0.0:3000\").await.unwrap();",
        "\n    let _admin = tokio::net::TcpListener::bind(\"127.0.0.1:0\").await.unwrap();",
    );
    snippet_compiles(
        "tokio-echo",
        "TcpListener::bind(\"127.0.0.1:8080\").await?;",
        "\n    let _admin = TcpListener::bind(\"127.0.0.1:0\").await?;",
    );
    snippet_compiles(
        "std-hello",
        "TcpListener::bind(\"127.0.0.1:80\")?;",
        "\n    let _admin = TcpListener::bind(\"127.0.0.1:0\")?;",
    );
    snippet_compiles(
        "actix-hello",
        ".bind((\"127.0.0.1\", 8080))",
        "?\n    .bind((\"127.0.0.1\", 0))",
    );
}

/// A `main` that binds nothing (a new package's) gets lines that compile in it as it is:
/// no `?` in a `main` that returns `()`.
#[test]
fn the_snippet_for_a_main_without_a_bind_compiles_in_it() {
    let project =
        TestProject::init_fixture("plain").with_target_dir(kept_target_dir("init-axum-target"));
    let init = project.init(&["--framework", "std"]);
    assert_exit(&init, 0);
    assert!(
        init.stderr
            .contains("    let listener = portguard::listener().expect(\"cannot listen\");\n"),
        "{}",
        init.describe()
    );
    project.write_file(
        "src/main.rs",
        "mod portguard;\nfn main() {\n    let listener = portguard::listener().expect(\"cannot listen\");\n    portguard::notify_ready();\n    drop(listener);\n}\n",
    );
    let check = run_within(
        project.command(crate::support::cargo_bin(), &["check"]),
        BUILD_TIMEOUT,
    );
    assert_exit(&check, 0);
}
