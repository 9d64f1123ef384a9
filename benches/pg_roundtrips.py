#!/usr/bin/env python3
"""Counts database round trips: a TCP proxy between a service and PostgreSQL.

Usage: pg_roundtrips.py LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT LOG_FILE

A round trip is a client "turn": bytes the client sends after the server last
spoke (or after connecting). Pipelined messages sent without waiting count
once; one message split over several TCP reads also counts once. Each turn
appends one line to LOG_FILE once the server answers it, naming the protocol
messages in it: `B(SELECT ...) E C S` executes a prepared statement (P: parse,
B: bind, D: describe, E: execute, C: close, S: sync; a lone S is sqlx's
ping), `Q(BEGIN; ...)` is a simple query. So the log says which statement cost
which trip. Messages are decoded only on a plain connection (sslmode=disable);
under TLS a turn reads `tls`. Used by benches/get_decision.sh, which runs it
only while it counts.
"""

import asyncio
import sys

LISTEN_PORT, UP_HOST, UP_PORT, LOG = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
conn_ids = iter(range(1, 1_000_000))


def describe(buf: bytearray, started: bool, statements: dict):
    """Consumes whole messages from buf; returns (names, started).
    statements maps prepared statement names to their SQL (from Parse)."""
    names = []
    while True:
        if not started:  # startup packet: length-prefixed, no type byte
            if len(buf) < 8:
                break
            length = int.from_bytes(buf[0:4], "big")
            if len(buf) < length:
                break
            code = int.from_bytes(buf[4:8], "big")
            names.append("tls" if code == 80877103 else "startup")
            started = code != 80877103  # an SSLRequest precedes the real startup
            del buf[:length]
            continue
        if len(buf) < 5:
            break
        kind, length = chr(buf[0]), int.from_bytes(buf[1:5], "big")
        if len(buf) < 1 + length:
            break
        body = bytes(buf[5 : 1 + length])
        if kind == "Q":
            text = " ".join(body.rstrip(b"\0").decode(errors="replace").split())
            names.append("Q(" + text + ")")
        elif kind == "P":  # Parse: statement name, then the SQL text
            name, sql = body.split(b"\0")[:2]
            # One line per trip: multi-line SQL is folded to one line.
            statements[name] = " ".join(sql.decode(errors="replace").split())
            names.append("P(" + statements[name] + ")")
        elif kind == "B":  # Bind: portal name, then the statement's name
            name = body.split(b"\0")[1]
            names.append("B(" + statements.get(name, "?") + ")")
        else:
            names.append(kind)
        del buf[: 1 + length]
    return names, started


async def handle(client_r, client_w):
    conn = next(conn_ids)
    server_r, server_w = await asyncio.open_connection(UP_HOST, UP_PORT)
    state = {"turn": None, "buf": bytearray(), "started": False, "tls": False, "statements": {}}

    async def pump(reader, writer, from_client):
        try:
            while data := await reader.read(65536):
                if from_client:
                    names = []
                    if not state["tls"]:
                        state["buf"] += data
                        names, state["started"] = describe(state["buf"], state["started"], state["statements"])
                    if state["turn"] is None:
                        state["turn"] = []
                    state["turn"] += names
                else:
                    # The server answers: the client's turn is over, log it whole.
                    if state["turn"] is not None:
                        with open(LOG, "a") as log:
                            log.write(f"conn {conn}: {' '.join(state['turn']) or 'tls'}\n")
                        state["turn"] = None
                    # The server's one-byte 'S' answer to an SSLRequest: TLS from here.
                    if not state["started"] and data == b"S":
                        state["tls"] = True
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    await asyncio.gather(pump(client_r, server_w, True), pump(server_r, client_w, False))


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", LISTEN_PORT)
    async with server:
        await server.serve_forever()


asyncio.run(main())
