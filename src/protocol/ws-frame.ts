/**
 * Complete WebSocket text frames as a server sends them (RFC 6455 §5.2: FIN, opcode 1,
 * unmasked, then the payload length in 7, 16 or 64 bits). Run events are framed once
 * here and the same bytes go to every subscriber, header included.
 */

function headerLength(payloadLength: number): number {
  return payloadLength < 126 ? 2 : payloadLength < 65_536 ? 4 : 10;
}

function writeHeader(out: Buffer, offset: number, payloadLength: number): number {
  out[offset] = 0x81;
  if (payloadLength < 126) {
    out[offset + 1] = payloadLength;
    return offset + 2;
  }
  if (payloadLength < 65_536) {
    out[offset + 1] = 126;
    out.writeUInt16BE(payloadLength, offset + 2);
    return offset + 4;
  }
  out[offset + 1] = 127;
  out.writeBigUInt64BE(BigInt(payloadLength), offset + 2);
  return offset + 10;
}

/** One frame per text, back to back in one Buffer (a catch-up page leaves in one write). */
export function encodeTextFrames(texts: readonly string[]): Buffer {
  const lengths = texts.map((text) => Buffer.byteLength(text));
  let total = 0;
  for (const length of lengths) total += headerLength(length) + length;
  const out = Buffer.allocUnsafe(total);
  let offset = 0;
  for (let i = 0; i < texts.length; i++) {
    offset = writeHeader(out, offset, lengths[i]!);
    offset += out.write(texts[i]!, offset, "utf8");
  }
  return out;
}

/** The frame of one text. */
export function encodeTextFrame(text: string): Buffer {
  return encodeTextFrames([text]);
}
