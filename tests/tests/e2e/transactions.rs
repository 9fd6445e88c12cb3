//! A retried transaction ID yields the same event, once.

use anyhow::{Context as _, ensure};
use kairan_tests::{PASSWORD, ServerOptions, TestServer};
use serde_json::json;

use crate::support::paginate;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_transaction_id_is_idempotent() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let room = alice.create_room(&json!({ "preset": "private_chat" })).await?;

    let first = alice.send_text_ok(&room, "txn-retry", "only once").await.context("first PUT")?;
    let second = alice.send_text_ok(&room, "txn-retry", "only once").await.context("retried PUT")?;
    ensure!(first == second, "the retry created a new event: {first} then {second}");

    let count = |events: &[serde_json::Value]| {
        events.iter().filter(|e| e["type"] == "m.room.message" && e["content"]["body"] == "only once").count()
    };
    let timeline = paginate(&alice, &room, "b", 100).await?;
    ensure!(count(&timeline) == 1, "{} copies of the message in the room", count(&timeline));

    // The transaction ID is scoped to the device: the same ID from another device (a new
    // login) is a new transaction.
    let other_device = server.api("alice", PASSWORD).await?;
    let third = other_device.send_text_ok(&room, "txn-retry", "only once").await.context("PUT from device 2")?;
    ensure!(third != first, "another device's transaction was treated as a retry of the first");
    let timeline = paginate(&alice, &room, "b", 100).await?;
    ensure!(count(&timeline) == 2, "{} copies after the second device's send, expected 2", count(&timeline));
    Ok(())
}

/// A transaction ID belongs to its request path (as in Synapse): the same ID used in
/// another room is another request, not a retry. Clients that number their transactions
/// per room (the Synapse interop test found this) would otherwise lose messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_id_is_scoped_to_the_room() -> anyhow::Result<()> {
    let server = TestServer::start(ServerOptions::default()).await?;
    server.create_users(&["alice"]).await?;
    let alice = server.api("alice", PASSWORD).await?;
    let first_room = alice.create_room(&json!({ "preset": "private_chat" })).await?;
    let second_room = alice.create_room(&json!({ "preset": "private_chat" })).await?;

    let first = alice.send_text_ok(&first_room, "txn-1", "in the first room").await?;
    let second = alice.send_text_ok(&second_room, "txn-1", "in the second room").await?;
    ensure!(first != second, "the second room's send was taken for a retry of the first: {first}");
    let timeline = paginate(&alice, &second_room, "b", 100).await?;
    ensure!(
        timeline.iter().any(|e| e["event_id"] == second.as_str() && e["content"]["body"] == "in the second room"),
        "the second room lacks its message"
    );
    Ok(())
}
