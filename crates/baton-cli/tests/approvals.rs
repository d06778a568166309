//! Approval rules beyond the basics in `mcp.rs`: what "approve for this session" covers,
//! patches under `untrusted`, and when `on-failure` offers an unsandboxed retry.

mod common;

use baton_test_support::{
    RecordedRequest, Reply, ReplyItem, ScriptedModelServer, Wire, default_script,
};
use common::mcp::{Elicit, McpProcess};
use common::*;
use serde_json::json;

/// `escalate: CMD` asks for CMD to run outside the sandbox; the rest is the default script.
fn script(request: &RecordedRequest) -> Reply {
    if request.last_tool_output().is_none()
        && let Some(command) = request
            .last_user_text()
            .and_then(|t| t.strip_prefix("escalate: ").map(str::to_owned))
    {
        return Reply::Items(vec![ReplyItem::ToolCall {
            name: "shell".into(),
            arguments: json!({
                "command": ["bash", "-lc", command],
                "with_escalated_permissions": true,
                "justification": "needs to write outside the workspace"
            }),
        }]);
    }
    default_script(request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_for_session_does_not_cover_running_outside_the_sandbox() {
    let server = ScriptedModelServer::start_blocking(script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let mcp = McpProcess::spawn_with(&env, Elicit::Answer("approve_for_session")).await;
    let (id, _) = mcp
        .start_with(json!({"prompt": "shell: touch one.txt", "cwd": env.project,
                           "approval-policy": "untrusted"}))
        .await;
    assert_eq!(mcp.elicitations().len(), 1);
    mcp.reply(&id, "shell: touch one.txt").await;
    assert_eq!(mcp.elicitations().len(), 1, "approved for the session");
    mcp.reply(&id, "escalate: touch one.txt").await;
    assert_eq!(
        mcp.elicitations().len(),
        2,
        "running the same command unsandboxed is asked again"
    );
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_ask_under_untrusted() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let patch = "*** Begin Patch\n*** Add File: added.txt\n+hi\n*** End Patch";

    let mcp = McpProcess::spawn_with(&env, Elicit::Answer("deny")).await;
    let (_, answer) = mcp
        .start_with(
            json!({"prompt": format!("patch: {patch}"), "cwd": env.project,
                           "approval-policy": "untrusted"}),
        )
        .await;
    assert!(!env.project.join("added.txt").exists());
    assert!(answer.contains("patch not applied"), "{answer}");
    let asked = mcp.elicitations();
    assert_eq!(asked.len(), 1);
    assert!(asked[0].to_string().contains("added.txt"), "{}", asked[0]);
    mcp.close().await;

    let mcp = McpProcess::spawn_with(&env, Elicit::Answer("approve")).await;
    mcp.start_with(
        json!({"prompt": format!("patch: {patch}"), "cwd": env.project,
                          "approval-policy": "untrusted"}),
    )
    .await;
    assert!(env.project.join("added.txt").exists());
    mcp.close().await;

    // Under on-request a patch inside the workspace needs no question.
    std::fs::remove_file(env.project.join("added.txt")).expect("remove");
    let mcp = McpProcess::spawn_with(&env, Elicit::Answer("deny")).await;
    mcp.start_with(json!({"prompt": format!("patch: {patch}"), "cwd": env.project}))
        .await;
    assert!(env.project.join("added.txt").exists());
    assert!(mcp.elicitations().is_empty());
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_offers_a_retry_only_when_the_sandbox_stopped_the_command() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let outside = env.root.join("outside");
    std::fs::create_dir_all(&outside).expect("dir");
    let mcp = McpProcess::spawn_with(&env, Elicit::Answer("approve")).await;

    let (id, _) = mcp
        .start_with(
            json!({"prompt": "shell: grep nothing-here /dev/null", "cwd": env.project,
                           "approval-policy": "on-failure"}),
        )
        .await;
    assert!(
        mcp.elicitations().is_empty(),
        "a plain failure is not a sandbox denial"
    );

    let target = outside.join("written.txt");
    mcp.reply(&id, &format!("shell: echo hi > {}", target.display()))
        .await;
    assert_eq!(
        mcp.elicitations().len(),
        1,
        "the sandbox denial offers a retry"
    );
    assert!(
        target.exists(),
        "approved: it ran again without the sandbox"
    );
    mcp.close().await;
}
