"""An HL7 v2 receiver at the reading partner: it accepts ADT messages over
MLLP on 127.0.0.1, writes each one it receives to a file (segments on
separate lines) and answers with an application accept (MSA|AA).

Usage: /usr/bin/python3 receiver.py OUT_DIR

It prints "LISTENING <port>" once it serves, on a port of the system's
choosing. python3-hl7's asyncio server is strict: it answers only well
formed messages.
"""
import asyncio
import itertools
import pathlib
import sys

import hl7
import hl7.mllp

out = pathlib.Path(sys.argv[1])
counter = itertools.count(1)


async def handle(reader, writer):
    try:
        while not writer.is_closing():
            msg = await reader.readmessage()
            n = next(counter)
            (out / f"received-{n}.hl7").write_text(str(msg).replace("\r", "\n") + "\n")
            writer.writemessage(msg.create_ack(ack_code="AA"))
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    finally:
        writer.close()


async def main():
    server = await hl7.mllp.start_hl7_server(handle, host="127.0.0.1", port=0)
    print("LISTENING", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
