// The Socket.IO peer of `make bench`, doing rollcall's job the Socket.IO way:
//   POST /publish {"room","event","data"}  ->  io.to(room).emit(event, data)
//   client event "subscribe" (room, ack?)  ->  socket.join(room), ack("ok")
// With REDIS_URL set, rooms go through @socket.io/redis-adapter (as a
// multi-node deployment would); without it, the in-memory adapter.
// Listens on 127.0.0.1 only. Env: PORT (required), REDIS_URL (optional).
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.env.PORT);
if (!port) throw new Error("PORT is required");

const http = createServer();
const io = new Server(http, {
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024,
});

if (process.env.REDIS_URL) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

io.on("connection", (socket) => {
  socket.on("subscribe", (room, ack) => {
    if (typeof room !== "string") return;
    socket.join(room);
    if (typeof ack === "function") ack("ok");
  });
});

// Socket.IO attaches its own "request" listener for /socket.io/; ours
// answers everything else.
http.on("request", (req, res) => {
  if (req.url.startsWith("/socket.io")) return;
  if (req.method === "GET" && req.url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"status":"ok"}');
    return;
  }
  if (req.method !== "POST" || req.url !== "/publish") {
    res.writeHead(404);
    res.end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let msg;
    try {
      msg = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      res.writeHead(400);
      res.end('{"error":"bad_json"}');
      return;
    }
    io.to(msg.room).emit(msg.event, msg.data);
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"ok":true}');
  });
});

http.listen(port, "127.0.0.1", () => console.log(`socket.io peer on 127.0.0.1:${port}`));
const stop = () => io.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
