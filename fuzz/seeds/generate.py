#!/usr/bin/env python3
"""Writes the committed seed corpus, one folder per fuzz target.

Sources: the LiveKit webhook bodies and SDK-minted tokens in
tests/fixtures/livekit/, and the Pusher test vectors of PROTOCOLS.md §2.
Run from anywhere: `python3 fuzz/seeds/generate.py`. Input layouts are the
ones each target's header comment describes (fields split at NUL).
"""
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "tests", "fixtures", "livekit")
JWT_HEADER = b'{"alg":"HS256","typ":"JWT"}'
NOW = 1795266392 + 60  # rollcall_fuzz::NOW_UNIX


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


BODIES = {n: fixture(n + ".json") for n in (
    "participant_joined", "participant_left", "room_started",
    "room_finished", "egress_participant_joined")}
TOKENS = json.load(open(os.path.join(FIXTURES, "sdk_tokens.json")))
SCHEDULE_META = json.dumps(json.dumps(
    {"starts_at": "2025-11-21T10:00:00Z", "duration_minutes": 60,
     "expected": ["1_Ameer_Maher", "2_Sara"]}))
WITH_SCHEDULE = BODIES["room_started"].replace(
    b'"name":"mytestroom"',
    b'"name":"itqan-academy-quran-session-121", "metadata":' + SCHEDULE_META.encode())
VECTOR_BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
SEEDS = {
    "webhook_body": {
        **BODIES,
        "with_schedule": WITH_SCHEDULE,
        "joined_then_left": BODIES["participant_joined"] + b"\0" + BODIES["participant_left"],
        "cycle_and_finish": b"\0".join([WITH_SCHEDULE, BODIES["participant_joined"],
                                       BODIES["participant_left"], BODIES["room_finished"]]),
        "joined_ms_only": BODIES["participant_joined"].replace(b'"joinedAt":"1763719201", ', b""),
    },
    "webhook_auth": {
        **{name: b"\0" + t["token"].encode() + b"\0" + fixture(t["body_file"])
           for name, t in TOKENS.items() if name.startswith("webhook_")},
        "bearer": b"\0Bearer " + TOKENS["webhook_participant_joined"]["token"].encode()
                  + b"\0" + BODIES["participant_joined"],
        "minted": b"\x01" + JWT_HEADER + b"\0" + json.dumps(
            {"sha256": "$SHA", "iss": "devkey", "nbf": NOW, "iat": NOW,
             "exp": NOW + 300}).encode() + b"\0" + BODIES["participant_joined"],
        "minted_fractional": b"\x03" + JWT_HEADER + b"\0" + json.dumps(
            {"sha256": "$SHA", "sub": "", "iss": "otherkey", "nbf": NOW + 0.5,
             "exp": NOW + 300.25}).encode() + b"\0" + BODIES["room_finished"],
    },
    "heartbeat_token": {
        **{name: b"\0" + t["token"].encode() for name, t in TOKENS.items()
           if name.startswith("access_")},
        "bearer": b"\0Bearer " + TOKENS["access_room_join"]["token"].encode(),
        "minted": b"\x01" + JWT_HEADER + b"\0" + json.dumps(
            {"iss": "devkey", "sub": "1_Ameer_Maher", "name": "Ameer", "exp": NOW + 300,
             "video": {"roomJoin": True, "room": "itqan-academy-quran-session-121"}}).encode(),
    },
    "client_frame": {
        "subscribe": b'{"event":"pusher:subscribe","data":{"channel":"session.121"}}',
        "subscribe_private": b'{"event":"pusher:subscribe","data":{"channel":"private-foobar",'
                             b'"auth":"278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"}}',
        "subscribe_presence": b'{"event":"pusher:subscribe","data":{"channel":"presence-x",'
                              b'"auth":"k:00","channel_data":"{\\"user_id\\":1}"}}',
        "subscribe_string_data": b'{"event":"pusher:subscribe","data":"{\\"channel\\":\\"session.121\\"}"}',
        "unsubscribe": b'{"event":"pusher:unsubscribe","data":{"channel":"session.121"}}',
        "ping": b'{"event":"pusher:ping","data":{}}',
        "client_event": b'{"event":"client-typing","channel":"private-foobar","data":{"x":1}}',
    },
    "pusher_http_api": {
        "vector": b"\0/apps/3/events\0auth_key=278d425bdf160c739803&auth_timestamp=1353088179"
                  b"&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
                  b"&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c\0"
                  + VECTOR_BODY,
        "signed_event": b"\x01/apps/3/events\0\0" + VECTOR_BODY,
        "signed_event_info": b"\x01/apps/3/events\0\0" + json.dumps(
            {"name": "e", "channel": "session.121", "data": {"a": 1}, "socket_id": "1.2",
             "info": "subscription_count"}).encode(),
        "signed_batch": b"\x01/apps/3/batch_events\0\0" + json.dumps(
            {"batch": [{"name": "e", "channel": "a", "data": "x"},
                       {"name": "f", "channel": "presence-b", "data": "y", "info": "user_count"}]}).encode(),
        "signed_channels": b"\x03/apps/3/channels\0filter_by_prefix=presence-&info=user_count\0",
        "signed_channel": b"\x03/apps/3/channels/private-foobar\0info=subscription_count\0",
    },
    "schedule": {
        "api": b"\0" + json.dumps({"starts_at": "2025-11-21T10:00:00Z", "duration_minutes": 30,
                                   "expected": ["1_Ameer_Maher"]}).encode(),
        "api_offset": b"\0" + json.dumps({"starts_at": "2025-11-21T12:00:00.123+02:00",
                                          "duration_minutes": 1440}).encode(),
        "metadata": b"\x01" + json.loads(SCHEDULE_META).encode(),
        "metadata_string_minutes": b"\x01" + json.dumps(
            {"starts_at": "2025-11-21T10:00:00Z", "duration_minutes": " 60 "}).encode(),
    },
    "channel_name": {
        "session": b"session.121",
        "private": b"private-foobar",
        "presence": b"presence-room",
        "all_chars": b"A-Za-z0-9_-=@,.;",
        "longest": b"a" * 200,
        "socket_id": b"1234.1234",
        "socket_id_max": b"4294967295.4294967295",
    },
    "livekit_keys": {
        "two": b"devkey: secret, otherkey: othersecret",
        "lines": b"key1: secret1\nkey2: se:cr:et\r\n\n",
        "trailing": b"a:b,",
        "duplicate": b"a:b, a:c",
        "bare": b"justasecret",
    },
    "naming": {
        "fixture": b"itqan-academy-quran-session-121\0" + b"1_Ameer_Maher",
        "bare": b"quran-session-7\0" + b"42",
        "not_ours": b"lobby\0" + b"guest",
    },
    "naming_patterns": {
        "defaults": b"^(?:.+-)?(?P<type>[a-z]+)-session-(?P<id>[0-9]+)$\0"
                    b"^(?P<user_id>[0-9]+)(?:_.*)?$\0session.{id}\0"
                    b"itqan-academy-quran-session-121\0" + b"1_Ameer_Maher",
        "room_template": b"^class-(?P<n>\\d+)$\0^(?P<user_id>.*)$\0private-{room}.{n}\0"
                         b"class-12\0" + b"anyone",
        "unclosed": b"^(?P<id>.*)$\0^(?P<user_id>.*)$\0x{id\0" + b"r\0" + b"i",
    },
}

for target, seeds in SEEDS.items():
    folder = os.path.join(HERE, target)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
print("wrote", sum(len(s) for s in SEEDS.values()), "seeds for", len(SEEDS), "targets")
