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
    "http_head": {
        "get": b"\0GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        "webhook": b"\0POST /webhooks/livekit HTTP/1.1\r\nHost: x\r\nContent-Type: application/webhook+json\r\n"
                   b"Authorization: eyJ.x.y\r\nContent-Length: 5\r\n\r\nhello",
        "chunked": b"\0POST /api/heartbeat HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "upgrade": b"\0GET /app/278d425bdf160c739803?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "http10_lf": b"\0\r\n\nCONNECT h:1 HTTP/1.0\nContent-Length: 3, 3\ncontent-length: 3\n\nabc",
        "smuggle": b"\0POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "too_large": b"\1GET / HTTP/1.1\r\nX: " + b"\x7f" * 130 + b"\r\n\r\n",
        "tls": b"\0\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    },
    "chunked_body": {
        "two_chunks": b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nGET / HTTP/1.1",
        "empty": b"0\r\n\r\n",
        "open": b"3\r\nabc\r\n",
        "bad": b"3\r\nabcd\r\n",
        "big_size": b"fffffffffffffff\r\nxyz",
    },
    "client_address": {
        "behind_proxy": b"10.0.0.0/8, 192.168.1.7\0" b"10.0.0.1\0" b"1.1.1.1, 203.0.113.9, 10.0.0.2",
        "split": b"10.0.0.0/8\0" b"10.0.0.1\0" b"1.1.1.1\0" b"203.0.113.9:4711\0" b"10.0.0.2",
        "all_trusted": b"10.0.0.0/8\0" b"10.0.0.1\0" b"10.0.0.7, 10.0.0.2",
        "ipv6": b"2001:db8:1::/48,::1\0" b"2001:db8:1::1\0" b"2001:db8:ffff::1, [2001:db8:1::2]:80",
        "mapped": b"::ffff:10.0.0.0/104\0" b"::ffff:10.0.0.1\0" b"::ffff:203.0.113.9, garbage",
        "untrusted": b"10.0.0.1\0" b"198.51.100.2\0" b"203.0.113.9",
    },
    "limits_config": {
        "minute": b"20/1m\0" b"https://App.Example.com/, http://localhost:3000\0" b"https://app.example.com:443",
        "spaced": b" 5 / 1m 30s \0" b"http://localhost:80\0" b"HTTP://LOCALHOST/",
        "off": b"0/10s\0" b"\0" b"null",
        "tight": b"10/10ns\0" b"app.example.com\0" b"https://app.example.com",
        "years": b"4294967295/584years\0" b"https://a:443:443\0" b"https://a:443",
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
