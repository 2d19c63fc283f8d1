// gzip (RFC 1952): the container the MNIST mirrors serve their files in.
//
// A .gz file is one or more *members*, each of them
//
//   header   10 bytes: magic 1f 8b, CM (8 = DEFLATE), FLG, MTIME (4), XFL, OS
//            then, as FLG says: FEXTRA (a length-prefixed blob), FNAME and
//            FCOMMENT (zero-terminated strings), FHCRC (a 16-bit header CRC)
//   body     a DEFLATE stream (Inflate.swift)
//   trailer  CRC-32 of the uncompressed bytes, then ISIZE, their count mod 2^32,
//            both 4 bytes little-endian
//
// DEFLATE itself has no checksum: a flipped bit in a stored block, or one that
// still happens to decode, would silently give wrong pixels. The trailer is
// what catches that, so we always check it. Members simply concatenate:
// `cat a.gz b.gz` is a valid .gz that decompresses to a followed by b.

/// What is wrong with a gzip container (problems inside the DEFLATE body are `InflateError`s).
public enum GzipError: Error, Equatable, CustomStringConvertible {
    /// The bytes do not start with the gzip magic number 1f 8b.
    case notGzip
    /// CM is not 8 (DEFLATE), the only method RFC 1952 defines.
    case unsupportedMethod(Int)
    /// FLG has one of its reserved bits 5-7 set; RFC 1952 says to reject such files.
    case reservedFlags(UInt8)
    /// The input ends inside a member's header or trailer.
    case truncated
    /// FHCRC does not match the header bytes before it.
    case headerChecksumMismatch
    /// The CRC-32 of the decompressed bytes differs from the trailer's.
    case checksumMismatch(expected: UInt32, actual: UInt32)
    /// The decompressed size (mod 2^32) differs from the trailer's ISIZE.
    case sizeMismatch(expected: UInt32, actual: UInt32)
    /// Bytes after the last complete member that are not another member.
    case trailingGarbage(offset: Int)

    public var description: String {
        switch self {
        case .notGzip: return "not gzip data: the file does not start with 1f 8b"
        case let .unsupportedMethod(method): return "unsupported gzip compression method \(method) (only 8, DEFLATE)"
        case let .reservedFlags(flags): return "corrupt gzip header: reserved flag bits set in \(flags)"
        case .truncated: return "truncated: the gzip data ends inside a header or trailer"
        case .headerChecksumMismatch: return "corrupt gzip header: header CRC does not match"
        case let .checksumMismatch(expected, actual):
            return "corrupt: CRC-32 of the data is \(hex(actual)) but the trailer says \(hex(expected))"
        case let .sizeMismatch(expected, actual):
            return "corrupt: decompressed \(actual) bytes (mod 2^32) but the trailer says \(expected)"
        case let .trailingGarbage(offset): return "corrupt: unexpected bytes after the gzip data at offset \(offset)"
        }
    }

    private func hex(_ value: UInt32) -> String { "0x" + String(value, radix: 16) }
}

/// A gzip (RFC 1952) decoder: all header flags, CRC-32 and size checks, multiple members.
///
///     let bytes = [UInt8](try Data(contentsOf: url))
///     let raw = Gzip.isGzip(bytes) ? try Gzip.decompress(bytes) : bytes
public enum Gzip {
    // FLG bits. FTEXT (bit 0) is only a hint that the data is text: nothing to do.
    static let flagHeaderCRC: UInt8 = 1 << 1
    static let flagExtra: UInt8 = 1 << 2
    static let flagName: UInt8 = 1 << 3
    static let flagComment: UInt8 = 1 << 4
    static let reservedFlags: UInt8 = 0b1110_0000

    /// True if `bytes` starts with the gzip magic number 1f 8b.
    public static func isGzip(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
    }

    /// Decompresses every member of a gzip file and concatenates their contents.
    ///
    /// - Parameter maxOutput: the most bytes accepted in total (see `Inflate.decompress`).
    /// - Throws: `GzipError` for a bad container, `InflateError` for a bad DEFLATE body.
    /// - Complexity: O(input + output).
    public static func decompress(_ bytes: [UInt8], maxOutput: Int = 1 << 30) throws -> [UInt8] {
        guard isGzip(bytes) else { throw GzipError.notGzip }
        var output = [UInt8]()
        var offset = 0
        while offset < bytes.count {
            guard offset == 0 || bytes[offset...].starts(with: [0x1f, 0x8b]) else {
                throw GzipError.trailingGarbage(offset: offset)
            }
            offset = try decompressMember(bytes, at: offset, appendingTo: &output, maxOutput: maxOutput)
        }
        return output
    }

    /// Decodes the member starting at `bytes[start]`, appends its contents to
    /// `output`, and returns the offset just past its trailer.
    static func decompressMember(_ bytes: [UInt8], at start: Int, appendingTo output: inout [UInt8],
                                 maxOutput: Int) throws -> Int {
        var offset = start
        func need(_ count: Int) throws {
            guard bytes.count - offset >= count else { throw GzipError.truncated }
        }
        func skipZeroTerminatedString() throws {
            guard let zero = bytes[offset...].firstIndex(of: 0) else { throw GzipError.truncated }
            offset = zero + 1
        }

        try need(10)
        guard bytes[offset] == 0x1f && bytes[offset + 1] == 0x8b else { throw GzipError.notGzip }
        guard bytes[offset + 2] == 8 else { throw GzipError.unsupportedMethod(Int(bytes[offset + 2])) }
        let flags = bytes[offset + 3]
        guard flags & reservedFlags == 0 else { throw GzipError.reservedFlags(flags) }
        offset += 10  // MTIME, XFL and OS tell us nothing we need

        if flags & flagExtra != 0 {
            try need(2)
            let extraLength = Int(bytes[offset]) | Int(bytes[offset + 1]) << 8
            offset += 2
            try need(extraLength)
            offset += extraLength
        }
        if flags & flagName != 0 { try skipZeroTerminatedString() }
        if flags & flagComment != 0 { try skipZeroTerminatedString() }
        if flags & flagHeaderCRC != 0 {
            try need(2)
            let stored = UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8
            guard stored == crc32(bytes[start..<offset]) & 0xFFFF else { throw GzipError.headerChecksumMismatch }
            offset += 2
        }

        // The last four bytes of the file are the last member's ISIZE: a good
        // guess at the output size for the usual single-member file.
        let hint = bytes.count >= 4 ? readLittleEndian32(bytes, at: bytes.count - 4) : 0
        let (data, end) = try Inflate.decompress(bytes, from: offset, maxOutput: maxOutput - output.count,
                                                 sizeHint: Int(hint))
        offset = end

        try need(8)
        let expectedCRC = readLittleEndian32(bytes, at: offset)
        let expectedSize = readLittleEndian32(bytes, at: offset + 4)
        let actualCRC = crc32(data)
        guard actualCRC == expectedCRC else {
            throw GzipError.checksumMismatch(expected: expectedCRC, actual: actualCRC)
        }
        let actualSize = UInt32(truncatingIfNeeded: data.count)
        guard actualSize == expectedSize else { throw GzipError.sizeMismatch(expected: expectedSize, actual: actualSize) }

        if output.isEmpty { output = data } else { output.append(contentsOf: data) }
        return offset + 8
    }

    static func readLittleEndian32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8
            | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
    }

    // MARK: CRC-32

    /// The CRC-32 used by gzip, zip and PNG (polynomial 0x04C11DB7, reflected).
    ///
    /// A CRC is the remainder of dividing the message, read as one long
    /// polynomial over GF(2) (bits are coefficients, addition is XOR), by a
    /// fixed polynomial of degree 32. Any burst of flipped bits up to 32 long
    /// changes the remainder. Because gzip numbers bits from the least
    /// significant end, the polynomial is used bit-reversed (0xEDB88320) and
    /// the register shifts right. The table holds the effect of dividing
    /// through each possible byte, so the work is one lookup per byte instead
    /// of eight shift-and-XOR steps. Starting from all ones and inverting the
    /// result (the `~`s) make leading and trailing zero bytes count.
    ///
    /// - Parameter crc: a previous result, to checksum data that arrives in pieces.
    ///
    ///     Gzip.crc32(Array("123456789".utf8)) == 0xCBF43926   // the standard check value
    public static func crc32(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBufferPointer { crc32(buffer: $0, continuing: crc) }
    }

    static func crc32(_ bytes: ArraySlice<UInt8>, continuing crc: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBufferPointer { crc32(buffer: $0, continuing: crc) }
    }

    /// The loop itself, on raw pointers: the index `(register ^ byte) & 0xFF`
    /// is always < 256, so the array bounds checks would be pure overhead on
    /// 47 MB of pixels.
    static func crc32(buffer: UnsafeBufferPointer<UInt8>, continuing crc: UInt32) -> UInt32 {
        crcTable.withUnsafeBufferPointer { table in
            var register = ~crc
            for byte in buffer {
                register = table[Int((register ^ UInt32(byte)) & 0xFF)] ^ (register >> 8)
            }
            return ~register
        }
    }

    /// [256]: the remainder contributed by each byte value.
    static let crcTable: [UInt32] = (0..<256).map { (byte: UInt32) -> UInt32 in
        var remainder = byte
        for _ in 0..<8 {
            remainder = remainder & 1 == 1 ? 0xEDB8_8320 ^ (remainder >> 1) : remainder >> 1
        }
        return remainder
    }
}
