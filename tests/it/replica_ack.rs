//! `ROLLCALL_REDIS_WAIT_REPLICAS`: a webhook is acknowledged only once a
//! replica has its commit (Redis `WAIT`), so a failover cannot lose an
//! acknowledged webhook. A real master and replica, both `redis-server`.

use std::time::Duration;

use crate::helpers::*;
use crate::redis_server::RedisServer;

/// Whether the Redis at `url` has `event` in `room`'s applied set.
async fn applied_on(url: &str, room: &str, event: &str) -> bool {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("SISMEMBER")
        .arg(format!("rollcall:{{{room}}}:applied"))
        .arg(event)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_acknowledged_webhook_is_on_the_replica_and_an_unconfirmed_one_is_503() {
    let master = RedisServer::start_master().await;
    let mut replica = RedisServer::start_replica_of(&master).await;
    let app = spawn_app_with(|s| {
        s.redis_url = Some(master.url());
        s.redis.wait_replicas = 1;
        // Generous: on a loaded 2-core machine a replica's acknowledgement
        // can take a few hundred ms, and a first 503 here would be a
        // false failure (the refusals below then take this long each).
        s.redis.wait_timeout = Duration::from_millis(1_500);
        s.redis.command_timeout = Duration::from_secs(3);
    })
    .await;
    let t0 = rollcall::domain::now_millis();

    // Confirmed by the replica: 200, and the replica has it already.
    let first = event_id();
    let res = app
        .post_webhook(&joined(ROOM, "7_Sara", "PA_1", t0, &first))
        .await;
    assert_eq!(res.status(), 200);
    assert!(applied_on(&replica.url(), ROOM, &first).await);

    // No replica: the commit happens on the master, but is not confirmed,
    // so the webhook is not acknowledged.
    replica.kill().await;
    let second = event_id();
    let body = joined(ROOM, "8_Omar", "PA_2", t0 + 1_000, &second);
    let res = app.post_webhook(&body).await;
    assert_eq!(res.status(), 503, "{}", res.text().await.unwrap());
    assert!(
        applied_on(&master.url(), ROOM, &second).await,
        "applied on the master"
    );
    // LiveKit's retry while still unconfirmed: 503 again, not a 200 for a
    // duplicate that no replica has.
    let res = app.post_webhook(&body).await;
    assert_eq!(res.status(), 503);

    // The replica is back and resyncs; the retry is acknowledged, and the
    // event is on the replica.
    replica.restart().await;
    master.wait_for_replicas(1).await;
    // As LiveKit retries: a replica that has just resynced may still miss
    // the WAIT on a loaded machine, and then the retry after it counts.
    let deadline = std::time::Instant::now() + crate::helpers::GUARD;
    loop {
        let status = app.post_webhook(&body).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(std::time::Instant::now() < deadline, "never acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(applied_on(&replica.url(), ROOM, &second).await);
    let attendance = app.get_attendance(ROOM).await;
    assert_eq!(
        attendance["participants"].as_array().unwrap().len(),
        2,
        "{attendance}"
    );
}
