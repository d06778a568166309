//! Memory is a cache of the disk: a thread held by a server is re-read when another process
//! appended to it, and idle threads are dropped and reloaded (issue 5).

mod common;

use baton_test_support::{ScriptedModelServer, Wire, default_script};
use common::mcp::McpProcess;
use common::*;

const LOADED: &str = "loaded the thread from its transcript";

fn loads_in(log: &str) -> usize {
    log.matches(LOADED).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sees_turns_another_process_appended() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let mcp = McpProcess::spawn(&env).await;
    let (thread_id, _) = mcp.start("from mcp", &env.project).await;

    // Another process continues the thread the server holds in memory.
    let output = env.run(&["exec", "resume", &thread_id, "from exec"]);
    assert_success(&output);

    let answer = mcp.reply(&thread_id, "RECALL").await;
    assert_eq!(answer, "recall: from mcp | from exec (0 tool outputs)");
    assert_eq!(
        loads_in(&mcp.log_text()),
        1,
        "re-read once because the file grew: {}",
        mcp.log_text()
    );
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_in_use_stays_in_memory_and_an_idle_one_is_reloaded() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");

    // Default TTL (30 min): consecutive replies are served from memory.
    let env = TestEnv::new(&server, Wire::Responses);
    let mcp = McpProcess::spawn(&env).await;
    let (thread_id, _) = mcp.start("one", &env.project).await;
    mcp.reply(&thread_id, "two").await;
    mcp.reply(&thread_id, "three").await;
    assert_eq!(loads_in(&mcp.log_text()), 0, "{}", mcp.log_text());
    mcp.close().await;

    // A zero TTL: a thread is idle as soon as its call ends (no waiting for a clock), so it is
    // dropped and comes back from disk, history intact.
    let env = TestEnv::new(&server, Wire::Responses);
    let config = env.home.join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("idle_thread_ttl = 0\n{text}")).expect("write");
    let mcp = McpProcess::spawn(&env).await;
    let (thread_id, _) = mcp.start("one", &env.project).await;
    let answer = mcp.reply(&thread_id, "RECALL").await;
    assert_eq!(answer, "recall: one (0 tool outputs)");
    assert_eq!(loads_in(&mcp.log_text()), 1, "{}", mcp.log_text());
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_replying_to_one_thread_never_interleave() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let first = McpProcess::spawn(&env).await;
    let second = McpProcess::spawn(&env).await;
    let (thread_id, _) = first.start("start", &env.project).await;

    let (mut accepted, mut busy) = (Vec::new(), 0);
    for round in 0..5 {
        let prompts = [
            format!("sleep: 200 round-{round}-first"),
            format!("sleep: 200 round-{round}-second"),
        ];
        let (a, b) = tokio::join!(
            first.call(
                "baton-reply",
                serde_json::json!({"threadId": thread_id, "prompt": prompts[0]})
            ),
            second.call(
                "baton-reply",
                serde_json::json!({"threadId": thread_id, "prompt": prompts[1]})
            ),
        );
        for (prompt, result) in prompts.iter().zip([a, b]) {
            if result.is_error == Some(true) {
                let text = common::mcp::text_of(&result);
                assert!(
                    text.contains("busy") && text.contains(&thread_id) && text.contains("process"),
                    "{text}"
                );
                busy += 1;
            } else {
                accepted.push(prompt.clone());
            }
        }
    }
    assert!(busy > 0, "the two servers never overlapped");
    let records = parse_complete_lines(&env.rollout_of(&thread_id));
    let mut prompts: Vec<String> = records
        .iter()
        .filter(|r| r["payload"]["type"] == "user_message")
        .filter_map(|r| r["payload"]["message"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(prompts.remove(0), "start");
    prompts.sort();
    accepted.sort();
    assert_eq!(
        prompts, accepted,
        "exactly the accepted turns are in the transcript"
    );
    first.close().await;
    second.close().await;
}
