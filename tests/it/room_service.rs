//! `livekit::RoomService` against the LiveKit double: answers in every
//! spelling LiveKit may use, unknown rooms, refused tokens, and the bounds
//! (deadline, size cap, malformed bodies). Also pins the double's own
//! LiveKit behaviour with raw requests, so tests built on it stay honest.

use std::time::{Duration, Instant};

use jsonwebtoken::{EncodingKey, Header};
use rollcall::livekit::{ParticipantKind, ParticipantState, RoomService, RoomServiceError};
use serde_json::{Value, json};

use crate::helpers::{GUARD, ROOM};
use crate::livekit_double::*;

const JOINED_MS: i64 = 1_763_719_201_456;

fn service(url: &str, secret: &str, timeout: Duration) -> RoomService {
    RoomService::new(url, DOUBLE_KEY, secret, reqwest::Client::new(), timeout).unwrap()
}

fn client_for(double: &LivekitDouble) -> RoomService {
    service(&double.url(), DOUBLE_SECRET, GUARD)
}

/// One room with a person, a phone caller who only sends seconds, and a
/// recorder still joining.
fn populated_room() -> FakeRoom {
    FakeRoom::new(ROOM)
        .sid("RM_hycBMAjmt6Ub")
        .metadata(r#"{"starts_at":"2025-11-21T10:00:00Z"}"#)
        .created_at(1_763_719_200)
        .with(
            FakeParticipant::new("1_Ameer_Maher", JOINED_MS)
                .sid("PA_eU7nwP2s3FcN")
                .name("Ameer Maher"),
        )
        .with(
            FakeParticipant::new("2_Phone", 1_763_719_300_000)
                .sid("PA_sip")
                .kind(ParticipantKind::Sip)
                .state(ParticipantState::Joined)
                .seconds_only(),
        )
        .with(
            FakeParticipant::new("EG_recorder", 1_763_719_400_000)
                .sid("PA_egress")
                .kind(ParticipantKind::Egress)
                .state(ParticipantState::Joining),
        )
}

#[tokio::test]
async fn lists_rooms_all_or_by_name() {
    let double = LivekitDouble::start().await;
    double.set_rooms([populated_room(), FakeRoom::new("other-room")]);
    let lk = client_for(&double);

    let all = lk.list_rooms(&[]).await.unwrap();
    let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [ROOM, "other-room"]);
    let room = &all[0];
    assert_eq!(room.sid, "RM_hycBMAjmt6Ub");
    assert_eq!(room.metadata, r#"{"starts_at":"2025-11-21T10:00:00Z"}"#);
    assert_eq!(room.creation_time, 1_763_719_200);

    let some = lk
        .list_rooms(&[ROOM.to_owned(), "gone-room".to_owned()])
        .await
        .unwrap();
    assert_eq!(some.len(), 1);
    assert_eq!(some[0].name, ROOM);

    double.set_rooms([]);
    assert!(lk.list_rooms(&[]).await.unwrap().is_empty());

    assert_eq!(double.calls(Method::ListRooms), 3);
    assert_eq!(double.room_calls(Method::ListRooms, "gone-room"), 1);
    assert_eq!(double.calls(Method::ListParticipants), 0);
}

#[tokio::test]
async fn lists_participants_in_every_spelling() {
    let double = LivekitDouble::start().await;
    double.put_room(populated_room());
    let lk = client_for(&double);

    let mut answers = Vec::new();
    for (spelling, emit_defaults, numbers) in [
        (Spelling::ProtoNames, true, false), // what LiveKit's Twirp server sends
        (Spelling::ProtoNames, false, false),
        (Spelling::CamelCase, true, false),
        (Spelling::CamelCase, false, true),
    ] {
        double.set_spelling(spelling);
        double.set_emit_defaults(emit_defaults);
        double.set_int64_as_numbers(numbers);
        let ps = lk
            .list_participants(ROOM)
            .await
            .unwrap()
            .expect("room exists");
        answers.push(ps);
    }
    for other in &answers[1..] {
        assert_eq!(other, &answers[0]);
    }

    let ps = &answers[0];
    assert_eq!(ps.len(), 3);
    let ameer = &ps[0];
    assert_eq!(ameer.sid, "PA_eU7nwP2s3FcN");
    assert_eq!(ameer.identity, "1_Ameer_Maher");
    assert_eq!(ameer.name, "Ameer Maher");
    assert_eq!(ameer.state, ParticipantState::Active);
    assert_eq!(ameer.kind, ParticipantKind::Standard);
    assert_eq!(ameer.joined_at_millis(), Some(JOINED_MS));
    let phone = &ps[1];
    assert_eq!(phone.kind, ParticipantKind::Sip);
    assert_eq!(phone.state, ParticipantState::Joined);
    assert_eq!(phone.joined_at_millis(), Some(1_763_719_300_000));
    let recorder = &ps[2];
    assert_eq!(recorder.kind, ParticipantKind::Egress);
    assert_eq!(recorder.state, ParticipantState::Joining);

    assert_eq!(double.room_calls(Method::ListParticipants, ROOM), 4);

    // An empty room: all four spellings give an empty list.
    double.set_participants(ROOM, Vec::new());
    double.set_emit_defaults(false);
    assert_eq!(lk.list_participants(ROOM).await.unwrap(), Some(Vec::new()));
}

#[tokio::test]
async fn unknown_room_is_none_or_empty_as_livekit_answers() {
    let double = LivekitDouble::start().await;
    let lk = client_for(&double);
    assert_eq!(lk.list_participants("no-such-room").await.unwrap(), None);

    // LiveKit OSS reading its store answers an empty list instead.
    double.set_unknown_room(UnknownRoom::EmptyList);
    assert_eq!(
        lk.list_participants("no-such-room").await.unwrap(),
        Some(Vec::new())
    );
    assert_eq!(
        double.room_calls(Method::ListParticipants, "no-such-room"),
        2
    );
}

#[tokio::test]
async fn wrong_secret_or_key_is_unauthenticated() {
    let double = LivekitDouble::start().await;
    double.put_room(populated_room());

    let wrong_secret = service(&double.url(), "not-the-secret", GUARD);
    let err = wrong_secret.list_rooms(&[]).await.unwrap_err();
    assert_eq!(err.kind(), "twirp");
    assert_eq!(err.twirp_code(), Some("unauthenticated"), "{err}");
    match &err {
        RoomServiceError::Twirp {
            status,
            plain_body,
            msg,
            ..
        } => {
            assert_eq!(*status, 401);
            assert!(plain_body, "LiveKit's token check answers in plain text");
            assert!(msg.starts_with("invalid authorization token"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // Refused, never "no such room".
    let err = wrong_secret.list_participants(ROOM).await.unwrap_err();
    assert_eq!(err.twirp_code(), Some("unauthenticated"));

    let wrong_key = RoomService::new(
        &double.url(),
        "otherkey",
        DOUBLE_SECRET,
        reqwest::Client::new(),
        GUARD,
    )
    .unwrap();
    let err = wrong_key.list_rooms(&[]).await.unwrap_err();
    assert!(
        matches!(&err, RoomServiceError::Twirp { status: 401, msg, .. } if msg == "invalid API key"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_slow_livekit_times_out_on_our_deadline() {
    let double = LivekitDouble::start().await;
    double.put_room(populated_room());
    double.set_delay(Method::ListParticipants, Duration::from_secs(10));
    let lk = service(&double.url(), DOUBLE_SECRET, Duration::from_millis(300));

    let started = Instant::now();
    let err = lk.list_participants(ROOM).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), "timeout", "{err}");
    assert!(
        matches!(err, RoomServiceError::Timeout { after: Some(d) } if d == Duration::from_millis(300))
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // The other method is not delayed.
    assert_eq!(lk.list_rooms(&[]).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_oversized_answer_is_refused_without_reading_it_all() {
    let double = LivekitDouble::start().await;
    let lk = client_for(&double);
    for declare_length in [false, true] {
        // Past the default 16 MiB cap, streamed.
        double.fail(
            Method::ListRooms,
            Fault::Huge {
                bytes: 17 * 1024 * 1024,
                declare_length,
            },
        );
        let err = lk.list_rooms(&[]).await.unwrap_err();
        assert!(
            matches!(err, RoomServiceError::TooLarge { limit } if limit == 16 * 1024 * 1024),
            "declared length {declare_length}: {err:?}"
        );
        assert_eq!(err.kind(), "too_large");
    }

    // A smaller cap applies the same way.
    let small = client_for(&double).with_max_response_bytes(1024);
    double.fail(
        Method::ListRooms,
        Fault::Huge {
            bytes: 4096,
            declare_length: false,
        },
    );
    let err = small.list_rooms(&[]).await.unwrap_err();
    assert!(
        matches!(err, RoomServiceError::TooLarge { limit: 1024 }),
        "{err:?}"
    );

    // Healed, the same client works again.
    double.heal(Method::ListRooms);
    assert!(lk.list_rooms(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn garbage_is_malformed() {
    let double = LivekitDouble::start().await;
    double.put_room(populated_room());
    let lk = client_for(&double);

    double.fail(Method::ListParticipants, Fault::garbage());
    let err = lk.list_participants(ROOM).await.unwrap_err();
    assert_eq!(err.kind(), "malformed", "{err}");

    // Valid JSON of the wrong shape is malformed too, never "nobody here".
    for body in ["[]", "null", r#"{"participants":"everyone"}"#] {
        double.fail(
            Method::ListParticipants,
            Fault::Raw {
                status: 200,
                content_type: "application/json",
                body: body.to_owned(),
            },
        );
        let err = lk.list_participants(ROOM).await.unwrap_err();
        assert_eq!(err.kind(), "malformed", "{body}: {err}");
    }
}

#[tokio::test]
async fn twirp_and_proxy_errors_are_reported() {
    let double = LivekitDouble::start().await;
    double.put_room(populated_room());
    let lk = client_for(&double);

    double.fail_next(
        Method::ListRooms,
        Fault::twirp("unavailable", "no nodes available"),
        1,
    );
    let err = lk.list_rooms(&[]).await.unwrap_err();
    assert!(
        matches!(&err, RoomServiceError::Twirp { status: 503, code, msg, plain_body: false }
            if code == "unavailable" && msg == "no nodes available"),
        "{err:?}"
    );
    // One answer only.
    assert_eq!(lk.list_rooms(&[]).await.unwrap().len(), 1);

    // A given status with a Twirp body: the status is reported as sent.
    double.fail(
        Method::ListParticipants,
        Fault::Twirp {
            status: 500,
            code: "internal".into(),
            msg: "boom".into(),
        },
    );
    let err = lk.list_participants(ROOM).await.unwrap_err();
    assert!(
        matches!(&err, RoomServiceError::Twirp { status: 500, code, .. } if code == "internal")
    );

    // A proxy's 404 page is a route problem, not a missing room.
    double.fail(
        Method::ListParticipants,
        Fault::plain(404, "404 page not found"),
    );
    let err = lk.list_participants(ROOM).await.unwrap_err();
    assert_eq!(err.twirp_code(), Some("bad_route"), "{err}");

    double.fail(
        Method::ListParticipants,
        Fault::Raw {
            status: 502,
            content_type: "text/html",
            body: "<html><h1>502 Bad Gateway</h1></html>".into(),
        },
    );
    let err = lk.list_participants(ROOM).await.unwrap_err();
    assert_eq!(err.twirp_code(), Some("unavailable"), "{err}");
}

#[tokio::test]
async fn ws_and_prefixed_urls_reach_the_double() {
    let double = LivekitDouble::start().await;
    double.put_room(populated_room());
    for url in [
        double.ws_url(),
        format!("{}/", double.ws_url()),
        double.url(),
    ] {
        let lk = service(&url, DOUBLE_SECRET, GUARD);
        assert_eq!(lk.list_rooms(&[]).await.unwrap().len(), 1, "{url}");
        assert_eq!(lk.list_participants(ROOM).await.unwrap().unwrap().len(), 3);
    }
    // A path prefix the double does not serve: bad_route, not "no room".
    let prefixed = service(
        &format!("{}/livekit", double.ws_url()),
        DOUBLE_SECRET,
        GUARD,
    );
    let err = prefixed.list_participants(ROOM).await.unwrap_err();
    assert_eq!(err.twirp_code(), Some("bad_route"), "{err}");
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let lk = service(&format!("ws://{addr}"), DOUBLE_SECRET, GUARD);
    let err = lk.list_rooms(&[]).await.unwrap_err();
    assert_eq!(err.kind(), "connect", "{err:?}");
}

/// The double refuses what LiveKit refuses, the way LiveKit does.
#[tokio::test]
async fn the_double_checks_tokens_and_routes_like_livekit() {
    let double = LivekitDouble::start().await;
    double.put_room(populated_room());
    let http = reqwest::Client::new();
    let now = rollcall::domain::now_millis() / 1000;
    let mint = |claims: Value, secret: &str| {
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let post = |method: &str, auth: Option<String>, body: Value| {
        let mut req = http
            .post(format!(
                "{}/twirp/livekit.RoomService/{method}",
                double.url()
            ))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.send()
    };
    async fn twirp(res: reqwest::Response) -> (u16, String, String) {
        let status = res.status().as_u16();
        let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(ct, "application/json");
        let body: Value = res.json().await.unwrap();
        (
            status,
            body["code"].as_str().unwrap().to_owned(),
            body["msg"].as_str().unwrap().to_owned(),
        )
    }
    let bearer = |t: String| Some(format!("Bearer {t}"));
    let list = json!({"iss": DOUBLE_KEY, "nbf": now, "exp": now + 60, "video": {"roomList": true}});
    let admin = |room: &str| {
        json!({"iss": DOUBLE_KEY, "nbf": now, "exp": now + 60,
               "video": {"roomAdmin": true, "room": room}})
    };
    let denied = (
        401,
        "unauthenticated".to_owned(),
        "permissions denied".to_owned(),
    );

    // Grants: none sent, a join grant, an admin grant for another room.
    let res = post("ListRooms", None, json!({})).await.unwrap();
    assert_eq!(twirp(res).await, denied);
    let join = json!({"iss": DOUBLE_KEY, "sub": "u", "exp": now + 60,
                      "video": {"roomJoin": true, "room": ROOM}});
    let res = post(
        "ListParticipants",
        bearer(mint(join, DOUBLE_SECRET)),
        json!({"room": ROOM}),
    );
    assert_eq!(twirp(res.await.unwrap()).await, denied);
    let res = post(
        "ListParticipants",
        bearer(mint(admin("other-room"), DOUBLE_SECRET)),
        json!({"room": ROOM}),
    );
    assert_eq!(twirp(res.await.unwrap()).await, denied);
    let res = post(
        "ListParticipants",
        bearer(mint(list.clone(), DOUBLE_SECRET)),
        json!({"room": ROOM}),
    );
    assert_eq!(twirp(res.await.unwrap()).await, denied);

    // The right grants.
    let res = post(
        "ListRooms",
        bearer(mint(list.clone(), DOUBLE_SECRET)),
        json!({"names": [ROOM]}),
    );
    let body: Value = res.await.unwrap().json().await.unwrap();
    assert_eq!(body["rooms"][0]["name"], ROOM);
    assert_eq!(
        body["rooms"][0]["creation_time"], "1763719200",
        "int64 as a string"
    );
    assert_eq!(body["rooms"][0]["num_participants"], 3);
    let res = post(
        "ListParticipants",
        bearer(mint(admin(ROOM), DOUBLE_SECRET)),
        json!({"room": ROOM}),
    );
    let body: Value = res.await.unwrap().json().await.unwrap();
    let p = &body["participants"][2];
    assert_eq!(p["joined_at_ms"], "1763719400000");
    assert_eq!(p["state"], "JOINING", "zero values are emitted");
    assert_eq!(p["kind"], "EGRESS");

    // Middleware refusals are 401 plain text: expired beyond the leeway,
    // no exp, a bad signature, not a bearer, not a JWT.
    let expired = json!({"iss": DOUBLE_KEY, "exp": now - 61, "video": {"roomList": true}});
    let no_exp = json!({"iss": DOUBLE_KEY, "video": {"roomList": true}});
    for auth in [
        bearer(mint(expired, DOUBLE_SECRET)),
        bearer(mint(no_exp, DOUBLE_SECRET)),
        bearer(mint(list.clone(), "wrong")),
        Some(mint(list.clone(), DOUBLE_SECRET)),
        bearer("not-a-jwt".into()),
    ] {
        let res = post("ListRooms", auth.clone(), json!({})).await.unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
        let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/plain"), "{auth:?}: {ct}");
    }
    // Within the leeway an expired token still passes.
    let recent = json!({"iss": DOUBLE_KEY, "exp": now - 30, "video": {"roomList": true}});
    let res = post("ListRooms", bearer(mint(recent, DOUBLE_SECRET)), json!({}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Routing: unknown method, wrong content type, GET, bad JSON.
    let token = bearer(mint(list.clone(), DOUBLE_SECRET));
    let res = post("DeleteEverything", token.clone(), json!({}))
        .await
        .unwrap();
    assert_eq!(twirp(res).await.1, "bad_route");
    let res = http
        .post(format!(
            "{}/twirp/livekit.RoomService/ListRooms",
            double.url()
        ))
        .header("authorization", token.clone().unwrap())
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(twirp(res).await.1, "bad_route");
    let res = http
        .get(format!(
            "{}/twirp/livekit.RoomService/ListRooms",
            double.url()
        ))
        .header("authorization", token.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(twirp(res).await.1, "bad_route");
    let res = http
        .post(format!(
            "{}/twirp/livekit.RoomService/ListRooms",
            double.url()
        ))
        .header("authorization", token.unwrap())
        .header("content-type", "application/json; charset=utf-8")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        twirp(res).await,
        (
            400,
            "malformed".into(),
            "the json request could not be decoded".into()
        )
    );
}
