// Tests for DEFLATE (Inflate.swift) and gzip (Gzip.swift).
//
// Three kinds of input: streams made by a real encoder (python3's zlib, embedded
// below as byte literals), streams built bit by bit with `DeflateBitWriter` to reach
// the malformed cases no encoder would produce, and damaged copies of good
// streams (every prefix, every flipped bit). The contract under test: a good
// stream decodes exactly; anything else throws, and never crashes or hangs.

import XCTest
@testable import MoE

// MARK: DeflateFixtures from python3's zlib

enum DeflateFixtures {
    // zlib.compressobj(9, zlib.DEFLATED, -15) on b"hello, hello, hello, hello!\n"
    // (raw DEFLATE; zlib picks a fixed-Huffman block, BTYPE 1, for input this small).
    static let fixedHuffman: [UInt8] = [
        0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0xd7, 0x51, 0xc8, 0xc0, 0xa4, 0x14, 0xb9, 0x00,
    ]
    static let fixedHuffmanText = "hello, hello, hello, hello!\n"

    // zlib.compressobj(9, zlib.DEFLATED, -15) on the 2110 bytes
    // b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(40))
    // (one dynamic-Huffman block, BTYPE 2).
    static let dynamicHuffman: [UInt8] = [
        0x9d, 0xd5, 0x5b, 0x16, 0xc1, 0x50, 0x0c, 0x46, 0xe1, 0x77, 0xa3, 0xc8, 0x10, 0xe4, 0x0f, 0x2d,
        0x66, 0xe3, 0x72, 0x68, 0x39, 0x7a, 0x68, 0xd5, 0x6d, 0xf4, 0x16, 0x33, 0xb0, 0x9f, 0xb3, 0xf6,
        0x53, 0xbe, 0x95, 0xe4, 0xb6, 0x4b, 0x36, 0x5d, 0xd9, 0xad, 0x49, 0x76, 0x1d, 0xdb, 0xed, 0xc9,
        0x36, 0x7d, 0x79, 0x74, 0xb6, 0x2f, 0x4f, 0x3b, 0x8e, 0xe7, 0xcb, 0x60, 0xe5, 0x9e, 0xfa, 0xdf,
        0x38, 0xaf, 0xdf, 0x2f, 0xdb, 0x95, 0xc3, 0x24, 0x7f, 0x1b, 0x07, 0x8d, 0x40, 0x13, 0xa0, 0x99,
        0x81, 0x66, 0x0e, 0x9a, 0x0a, 0x34, 0x35, 0x68, 0x16, 0xa0, 0x59, 0x92, 0x9d, 0x22, 0x08, 0x44,
        0x82, 0x13, 0x0a, 0x4e, 0x2c, 0x38, 0xc1, 0xe0, 0x44, 0x83, 0x13, 0x0e, 0x4e, 0x3c, 0x38, 0x01,
        0xe1, 0x44, 0x84, 0x88, 0x08, 0xa1, 0xdb, 0x40, 0x44, 0x88, 0x88, 0x10, 0x11, 0x21, 0x22, 0x42,
        0x44, 0x84, 0x88, 0x08, 0x11, 0x11, 0x22, 0x22, 0x82, 0x88, 0x08, 0x22, 0x22, 0xd0, 0xbb, 0x20,
        0x22, 0x82, 0x88, 0x08, 0x22, 0x22, 0x88, 0x88, 0x20, 0x22, 0x82, 0x88, 0x88, 0x3f, 0x45, 0x7c,
        0x00,
    ]
    static var dynamicHuffmanText: String {
        (0..<40).map { "line \($0): the quick brown fox jumps over the lazy dog\n" }.joined()
    }

    // zlib.compressobj(0, zlib.DEFLATED, -15) on b"stored, not compressed" (one stored block, BTYPE 0).
    static let stored: [UInt8] = [
        0x01, 0x16, 0x00, 0xe9, 0xff, 0x73, 0x74, 0x6f, 0x72, 0x65, 0x64, 0x2c, 0x20, 0x6e, 0x6f, 0x74,
        0x20, 0x63, 0x6f, 0x6d, 0x70, 0x72, 0x65, 0x73, 0x73, 0x65, 0x64,
    ]
    static let storedText = "stored, not compressed"

    // Three blocks: c = zlib.compressobj(6, zlib.DEFLATED, -15); c.compress(b"abcabcabcabcabc")
    // + c.flush(zlib.Z_SYNC_FLUSH) + c.compress(b" and then some more") + c.flush(), i.e. a
    // non-final fixed block, an empty non-final stored block (the sync marker 00 00 ff ff)
    // and a final fixed block.
    static let threeBlocks: [UInt8] = [
        0x4a, 0x4c, 0x4a, 0x4e, 0x44, 0x42, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x53, 0x48, 0xcc, 0x4b,
        0x51, 0x28, 0xc9, 0x48, 0xcd, 0x53, 0x28, 0xce, 0xcf, 0x4d, 0x55, 0xc8, 0xcd, 0x2f, 0x4a, 0x05,
        0x00,
    ]
    static let threeBlocksText = "abcabcabcabcabc and then some more"

    // gzip.compress(b"first member\n", mtime=0) + gzip.compress(b"second member\n", mtime=0):
    // two gzip members, 33 and 34 bytes.
    static let twoMembers: [UInt8] = [
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x4b, 0xcb, 0x2c, 0x2a, 0x2e, 0x51,
        0xc8, 0x4d, 0xcd, 0x4d, 0x4a, 0x2d, 0xe2, 0x02, 0x00, 0xa7, 0xf4, 0x85, 0x0a, 0x0d, 0x00, 0x00,
        0x00, 0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x2b, 0x4e, 0x4d, 0xce, 0xcf,
        0x4b, 0x51, 0xc8, 0x4d, 0xcd, 0x4d, 0x4a, 0x2d, 0xe2, 0x02, 0x00, 0x36, 0x18, 0x4b, 0x0e, 0x0e,
        0x00, 0x00, 0x00,
    ]

    // gzip.GzipFile(filename="hello.txt", mode="wb", fileobj=buffer, mtime=0) writing
    // b"hello, hello, hello, hello!\n": FLG = FNAME, name "hello.txt", body = `fixedHuffman`.
    static let named: [UInt8] = [
        0x1f, 0x8b, 0x08, 0x08, 0x00, 0x00, 0x00, 0x00, 0x02, 0xff, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x2e,
        0x74, 0x78, 0x74, 0x00, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0xd7, 0x51, 0xc8, 0xc0, 0xa4, 0x14, 0xb9,
        0x00, 0xc3, 0xc2, 0x80, 0xa5, 0x1c, 0x00, 0x00, 0x00,
    ]
}

// MARK: Helpers shared by the data tests

/// Writes a DEFLATE bit stream: numbers least significant bit first, Huffman
/// codes most significant bit first (RFC 1951, 3.1.1).
struct DeflateBitWriter {
    var bytes: [UInt8] = []
    private var used = 8  // bits used in the last byte; 8 means "start a new one"

    mutating func write(_ value: Int, bits: Int) {
        for i in 0..<bits {
            if used == 8 { bytes.append(0); used = 0 }
            bytes[bytes.count - 1] |= UInt8((value >> i) & 1) << UInt8(used)
            used += 1
        }
    }

    mutating func writeCode(_ code: Int, length: Int) {
        for i in stride(from: length - 1, through: 0, by: -1) { write((code >> i) & 1, bits: 1) }
    }

    /// Block header: BFINAL then BTYPE.
    mutating func header(final: Bool, type: Int) {
        write(final ? 1 : 0, bits: 1)
        write(type, bits: 2)
    }

    /// A literal/length symbol in the fixed code, from the table in RFC 1951, 3.2.6.
    mutating func fixedSymbol(_ symbol: Int) {
        switch symbol {
        case 0...143: writeCode(0b0011_0000 + symbol, length: 8)
        case 144...255: writeCode(0b1_1001_0000 + symbol - 144, length: 9)
        case 256...279: writeCode(symbol - 256, length: 7)
        default: writeCode(0b1100_0000 + symbol - 280, length: 8)
        }
    }

    /// A distance symbol in the fixed code: its 5-bit number.
    mutating func fixedDistance(_ symbol: Int) { writeCode(symbol, length: 5) }
}

/// Canonical Huffman codes from lengths, written independently of the library
/// as a reference: walk the lengths upward, hand out consecutive numbers,
/// double at each step.
func canonicalCodes(_ lengths: [Int]) -> [Int] {
    var codes = [Int](repeating: 0, count: lengths.count)
    var next = 0
    for length in 1...15 {
        for (symbol, l) in lengths.enumerated() where l == length {
            codes[symbol] = next
            next += 1
        }
        next <<= 1
    }
    return codes
}

/// The header of a hand-built dynamic block. `symbols` lists the code-length
/// symbols to send as (symbol, extra-bits value); by default one plain length
/// per code. Code-length code: symbols 0...12 get 4 bits and 13...18 get 5
/// (13/16 + 6/32 = 1, complete), unless `codeLengthLengths` says otherwise.
func writeDynamicHeader(_ writer: inout DeflateBitWriter, final: Bool, literalLengths: [Int], distanceLengths: [Int],
                        codeLengthLengths: [Int] = (0..<19).map { $0 <= 12 ? 4 : 5 },
                        symbols: [(Int, Int)]? = nil) {
    writer.header(final: final, type: 2)
    writer.write(literalLengths.count - 257, bits: 5)
    writer.write(distanceLengths.count - 1, bits: 5)
    writer.write(19 - 4, bits: 4)
    for symbol in [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15] {
        writer.write(codeLengthLengths[symbol], bits: 3)
    }
    let codes = canonicalCodes(codeLengthLengths)
    let extraBits = [16: 2, 17: 3, 18: 7]
    for (symbol, extra) in symbols ?? (literalLengths + distanceLengths).map({ ($0, 0) }) {
        writer.writeCode(codes[symbol], length: codeLengthLengths[symbol])
        writer.write(extra, bits: extraBits[symbol] ?? 0)
    }
}

/// A gzip file holding `data` in stored blocks, made without any compressor:
/// lets tests produce valid .gz fixtures of any content (see Gzip.crc32).
func storedGzip(_ data: [UInt8]) -> [UInt8] {
    var out: [UInt8] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]
    var start = 0
    repeat {
        let end = min(start + 65535, data.count)
        let length = end - start
        out += [end == data.count ? 1 : 0, UInt8(length & 0xff), UInt8(length >> 8),
                UInt8(~length & 0xff), UInt8((~length >> 8) & 0xff)]
        out += data[start..<end]
        start = end
    } while start < data.count
    let crc = Gzip.crc32(data)
    let size = UInt32(truncatingIfNeeded: data.count)
    for value in [crc, size] { out += (0..<4).map { UInt8((value >> (8 * $0)) & 0xff) } }
    return out
}

// MARK: DEFLATE

final class InflateTests: XCTestCase {
    func testRealEncoderFixturesDecode() throws {
        XCTAssertEqual(try Inflate.decompress(DeflateFixtures.fixedHuffman), Array(DeflateFixtures.fixedHuffmanText.utf8))
        XCTAssertEqual(try Inflate.decompress(DeflateFixtures.dynamicHuffman), Array(DeflateFixtures.dynamicHuffmanText.utf8))
        XCTAssertEqual(try Inflate.decompress(DeflateFixtures.stored), Array(DeflateFixtures.storedText.utf8))
        XCTAssertEqual(try Inflate.decompress(DeflateFixtures.threeBlocks), Array(DeflateFixtures.threeBlocksText.utf8))
        // The block types are what the comments claim (BTYPE is bits 1-2 of the first byte).
        XCTAssertEqual([DeflateFixtures.stored, DeflateFixtures.fixedHuffman, DeflateFixtures.dynamicHuffman].map { ($0[0] >> 1) & 3 },
                       [0, 1, 2])
    }

    func testEveryProperPrefixIsTruncated() {
        for fixture in [DeflateFixtures.fixedHuffman, DeflateFixtures.dynamicHuffman, DeflateFixtures.stored, DeflateFixtures.threeBlocks] {
            for cut in 0..<fixture.count {
                XCTAssertThrowsError(try Inflate.decompress(Array(fixture[0..<cut]))) { error in
                    XCTAssertEqual(error as? InflateError, .truncated, "prefix of \(cut) of \(fixture.count) bytes")
                }
            }
        }
    }

    func testBytesAfterTheFinalBlockAreLeftForTheContainer() throws {
        let (output, end) = try Inflate.decompress(DeflateFixtures.stored + [0xAA, 0xBB], from: 0, maxOutput: 1000,
                                                   sizeHint: 0)
        XCTAssertEqual(output, Array(DeflateFixtures.storedText.utf8))
        XCTAssertEqual(end, DeflateFixtures.stored.count)
    }

    func testFixedBlockWithLongAndOverlappingCopies() throws {
        var writer = DeflateBitWriter()
        writer.header(final: true, type: 1)
        writer.fixedSymbol(Int(UInt8(ascii: "x")))
        writer.fixedSymbol(285); writer.fixedDistance(0)                     // length 258, distance 1
        writer.fixedSymbol(Int(UInt8(ascii: "y")))
        writer.fixedSymbol(265); writer.write(1, bits: 1)                    // length 11 + 1 = 12
        writer.fixedDistance(4); writer.write(1, bits: 1)                    // distance 5 + 1 = 6
        writer.fixedSymbol(256)

        // Reference: the same copies done naively.
        var expected = Array("x".utf8)
        for _ in 0..<258 { expected.append(expected[expected.count - 1]) }
        expected += Array("y".utf8)
        for _ in 0..<12 { expected.append(expected[expected.count - 6]) }
        XCTAssertEqual(try Inflate.decompress(writer.bytes), expected)
        XCTAssertEqual(expected.count, 272)
    }

    func testHandBuiltDynamicBlockDecodes() throws {
        // 'a':1 bit, end:2, length-3 symbol:2; distances 1 and 2: one bit each.
        var literal = [Int](repeating: 0, count: 258)
        literal[97] = 1; literal[256] = 2; literal[257] = 2
        var writer = DeflateBitWriter()
        writeDynamicHeader(&writer, final: true, literalLengths: literal, distanceLengths: [1, 1])
        let codes = canonicalCodes(literal)
        writer.writeCode(codes[97], length: 1)
        writer.writeCode(codes[257], length: 2); writer.writeCode(0, length: 1)  // copy 3 from 1 back
        writer.writeCode(codes[256], length: 2)
        XCTAssertEqual(try Inflate.decompress(writer.bytes), Array("aaaa".utf8))
    }

    func testAllowedIncompleteCodes() throws {
        // Only the end-of-block code (one code of 1 bit) and no distance codes at all:
        // both incomplete, both legal, and the block is empty.
        var literal = [Int](repeating: 0, count: 257)
        literal[256] = 1
        var writer = DeflateBitWriter()
        writeDynamicHeader(&writer, final: true, literalLengths: literal, distanceLengths: [0])
        writer.writeCode(0, length: 1)
        XCTAssertEqual(try Inflate.decompress(writer.bytes), [])

        // The unused pattern of that one-code code ("1") matches nothing.
        var unused = DeflateBitWriter()
        writeDynamicHeader(&unused, final: true, literalLengths: literal, distanceLengths: [0])
        unused.write(0xFFFF, bits: 16)
        assertInflateError(unused.bytes, .invalidCode("literal/length"))
    }

    func testHostileBlockHeaders() {
        assertInflateError([0b111], .invalidBlockType)                          // BFINAL=1, BTYPE=3
        assertInflateError([0x01, 0x05, 0x00, 0x00, 0x00] + [UInt8](repeating: 65, count: 5),
                           .storedLengthMismatch(length: 5, complement: 0))
        assertInflateError([0x01, 0x0A, 0x00, 0xF5, 0xFF, 1, 2, 3], .truncated)  // LEN 10, 3 bytes follow
        assertInflateError([0x00, 0x00, 0x00, 0xFF, 0xFF], .truncated)           // non-final, then nothing
    }

    func testHostileSymbolsAndDistances() {
        for symbol in [286, 287] {
            var writer = DeflateBitWriter()
            writer.header(final: true, type: 1)
            writer.fixedSymbol(symbol)
            writer.write(0, bits: 16)
            assertInflateError(writer.bytes, .invalidLengthSymbol(symbol))
        }
        for symbol in [30, 31] {
            var writer = DeflateBitWriter()
            writer.header(final: true, type: 1)
            writer.fixedSymbol(65); writer.fixedSymbol(257); writer.fixedDistance(symbol)
            writer.write(0, bits: 16)
            assertInflateError(writer.bytes, .invalidDistanceSymbol(symbol))
        }
        var atStart = DeflateBitWriter()           // a copy before any output exists
        atStart.header(final: true, type: 1)
        atStart.fixedSymbol(257); atStart.fixedDistance(0); atStart.fixedSymbol(256)
        assertInflateError(atStart.bytes, .distanceTooFarBack(distance: 1, available: 0))
        var tooFar = DeflateBitWriter()            // 2 back with 1 byte of output
        tooFar.header(final: true, type: 1)
        tooFar.fixedSymbol(65); tooFar.fixedSymbol(257); tooFar.fixedDistance(1); tooFar.fixedSymbol(256)
        assertInflateError(tooFar.bytes, .distanceTooFarBack(distance: 2, available: 1))
    }

    func testHostileCodeLengths() {
        var good = [Int](repeating: 0, count: 258)
        good[97] = 1; good[256] = 2; good[257] = 2
        func dynamic(literal: [Int] = good, distance: [Int] = [1, 1],
                     codeLengthLengths: [Int] = (0..<19).map { $0 <= 12 ? 4 : 5 },
                     symbols: [(Int, Int)]? = nil) -> [UInt8] {
            var writer = DeflateBitWriter()
            writeDynamicHeader(&writer, final: true, literalLengths: literal, distanceLengths: distance,
                               codeLengthLengths: codeLengthLengths, symbols: symbols)
            writer.write(0, bits: 32)  // room to read on, so only the intended error can fire
            return writer.bytes
        }
        var over = good; over[98] = 1                            // 1/2 + 1/2 + 1/4 + 1/4 > 1
        var incomplete = good; incomplete[97] = 2                // 3/4 < 1
        var noEnd = good; noEnd[256] = 0; noEnd[98] = 2          // complete, but no symbol 256
        assertInflateError(dynamic(literal: over), .oversubscribedCode("literal/length"))
        assertInflateError(dynamic(literal: incomplete), .incompleteCode("literal/length"))
        assertInflateError(dynamic(literal: noEnd), .missingEndOfBlockCode)
        assertInflateError(dynamic(distance: [1, 1, 1]), .oversubscribedCode("distance"))
        assertInflateError(dynamic(distance: [2, 2, 2]), .incompleteCode("distance"))
        assertInflateError(dynamic(codeLengthLengths: [Int](repeating: 1, count: 19)),
                           .oversubscribedCode("code length"))
        assertInflateError(dynamic(codeLengthLengths: [1] + [Int](repeating: 0, count: 18)),
                           .incompleteCode("code length"))
        // 258 + 2 = 260 lengths announced; two runs of 138 zeros overrun them.
        assertInflateError(dynamic(symbols: [(18, 127), (18, 127)]), .codeLengthsOverrun)
        assertInflateError(dynamic(symbols: [(16, 0)]), .repeatWithoutPreviousLength)
        assertInflateError(dynamic(symbols: Array(repeating: (1, 0), count: 258) + [(16, 3)]), .codeLengthsOverrun)
        assertInflateError(dynamic(literal: good + [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                    0, 0, 0, 0, 0, 0, 0, 0, 0]),
                           .tooManyCodes(literalLengthCodes: 287, distanceCodes: 2))
        assertInflateError(dynamic(distance: [1, 1] + [Int](repeating: 0, count: 29)),
                           .tooManyCodes(literalLengthCodes: 258, distanceCodes: 31))
    }

    func testOutputLimitStopsAZipBomb() throws {
        // One literal then 40 copies of 258 bytes: 10,321 bytes out of 68 bytes in.
        var writer = DeflateBitWriter()
        writer.header(final: true, type: 1)
        writer.fixedSymbol(0)
        for _ in 0..<40 { writer.fixedSymbol(285); writer.fixedDistance(0) }
        writer.fixedSymbol(256)
        XCTAssertEqual(try Inflate.decompress(writer.bytes).count, 1 + 40 * 258)
        assertInflateError(writer.bytes, .outputLimitExceeded(limit: 10_000), maxOutput: 10_000)
        assertInflateError(DeflateFixtures.stored, .outputLimitExceeded(limit: 10), maxOutput: 10)
        assertInflateError(DeflateFixtures.fixedHuffman, .outputLimitExceeded(limit: 0), maxOutput: 0)
    }

    func testRandomBytesNeverCrash() {
        // Deterministic noise (SplitMix64); each input must decode or throw.
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var failures = 0
        for trial in 0..<3000 {
            var input = (0..<Int(next() % 96)).map { _ in UInt8(truncatingIfNeeded: next()) }
            if trial % 3 == 0, !input.isEmpty { input[0] = (input[0] & ~0b110) | 0b100 }  // force dynamic
            do {
                let output = try Inflate.decompress(input, maxOutput: 1 << 16)
                XCTAssertLessThanOrEqual(output.count, 1 << 16)
            } catch {
                XCTAssertTrue(error is InflateError)
                failures += 1
            }
        }
        XCTAssertGreaterThan(failures, 2000, "random bytes are almost never a valid stream")
    }

    private func assertInflateError(_ input: [UInt8], _ expected: InflateError, maxOutput: Int = 1 << 20,
                                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try Inflate.decompress(input, maxOutput: maxOutput), file: file, line: line) { error in
            XCTAssertEqual(error as? InflateError, expected, file: file, line: line)
        }
    }
}

// MARK: gzip

final class GzipTests: XCTestCase {
    func testCRC32() {
        XCTAssertEqual(Gzip.crc32(Array("123456789".utf8)), 0xCBF4_3926)  // the standard check value
        XCTAssertEqual(Gzip.crc32([UInt8]()), 0)
        let (a, b) = (Array("hello, ".utf8), Array("world".utf8))
        XCTAssertEqual(Gzip.crc32(b, continuing: Gzip.crc32(a)), Gzip.crc32(a + b))
    }

    func testRealEncoderFiles() throws {
        XCTAssertTrue(Gzip.isGzip(DeflateFixtures.named))
        XCTAssertFalse(Gzip.isGzip(DeflateFixtures.stored))
        XCTAssertFalse(Gzip.isGzip([0x1f]))
        XCTAssertEqual(try Gzip.decompress(DeflateFixtures.named), Array(DeflateFixtures.fixedHuffmanText.utf8))
        XCTAssertEqual(try Gzip.decompress(DeflateFixtures.twoMembers), Array("first member\nsecond member\n".utf8))
    }

    func testEveryOptionalHeaderField() throws {
        // FTEXT | FHCRC | FEXTRA | FNAME | FCOMMENT around the same DEFLATE body.
        var header: [UInt8] = [0x1f, 0x8b, 8, 0b0001_1111, 0, 0, 0, 0, 0, 3]
        header += [4, 0, 0xAB, 0xCD, 0x02, 0x00]                       // XLEN = 4, then 4 bytes
        header += Array("name.txt".utf8) + [0] + Array("a comment".utf8) + [0]
        let headerCRC = Gzip.crc32(header) & 0xFFFF
        let text = Array(DeflateFixtures.fixedHuffmanText.utf8)
        let trailer = [Gzip.crc32(text), UInt32(text.count)].flatMap { v in (0..<4).map { UInt8((v >> (8 * $0)) & 0xff) } }
        let file = header + [UInt8(headerCRC & 0xff), UInt8(headerCRC >> 8)] + DeflateFixtures.fixedHuffman + trailer
        XCTAssertEqual(try Gzip.decompress(file), text)

        var badHeaderCRC = file
        badHeaderCRC[header.count] ^= 1
        XCTAssertThrowsError(try Gzip.decompress(badHeaderCRC)) {
            XCTAssertEqual($0 as? GzipError, .headerChecksumMismatch)
        }
    }

    func testContainerErrors() {
        func assertGzipError(_ bytes: [UInt8], _ expected: GzipError, line: UInt = #line) {
            XCTAssertThrowsError(try Gzip.decompress(bytes), line: line) {
                XCTAssertEqual($0 as? GzipError, expected, line: line)
            }
        }
        let good = DeflateFixtures.named
        func changed(_ index: Int, to value: UInt8) -> [UInt8] {
            var copy = good
            copy[index] = value
            return copy
        }
        assertGzipError([], .notGzip)
        assertGzipError(DeflateFixtures.stored, .notGzip)
        assertGzipError(changed(2, to: 7), .unsupportedMethod(7))
        for bit in 5...7 { assertGzipError(changed(3, to: good[3] | 1 << bit), .reservedFlags(good[3] | 1 << bit)) }
        let crcStart = good.count - 8
        assertGzipError(changed(crcStart, to: good[crcStart] ^ 0x01),
                        .checksumMismatch(expected: 0xA580_C2C3 ^ 0x01, actual: 0xA580_C2C3))
        assertGzipError(changed(good.count - 4, to: 29), .sizeMismatch(expected: 29, actual: 28))
        assertGzipError(good + [0], .trailingGarbage(offset: good.count))
        assertGzipError(good + [0x1f, 0x8b, 8], .truncated)
    }

    func testEveryProperPrefixFails() throws {
        for cut in 0..<DeflateFixtures.named.count {
            XCTAssertThrowsError(try Gzip.decompress(Array(DeflateFixtures.named[0..<cut])), "prefix of \(cut) bytes")
        }
        // Two members: the one prefix that ends exactly between them is itself a valid file.
        let firstMemberSize = 33
        for cut in 0..<DeflateFixtures.twoMembers.count {
            let prefix = Array(DeflateFixtures.twoMembers[0..<cut])
            if cut == firstMemberSize {
                XCTAssertEqual(try Gzip.decompress(prefix), Array("first member\n".utf8))
            } else {
                XCTAssertThrowsError(try Gzip.decompress(prefix), "prefix of \(cut) bytes")
            }
        }
    }

    func testEveryFlippedBitIsCaughtOrHarmless() {
        // Some header flips are harmless (MTIME, XFL, OS, FTEXT, a letter of the
        // file name), and so are the padding bits after the last DEFLATE bit.
        // Whatever the flip, the output is never silently wrong, thanks to the
        // CRC; and in the body and trailer only the padding may go unnoticed.
        let bodyStart = 20  // after the 10-byte header and "hello.txt\0"
        var caughtInBodyAndTrailer = 0
        for index in 0..<DeflateFixtures.named.count {
            for bit in 0..<8 {
                var damaged = DeflateFixtures.named
                damaged[index] ^= 1 << bit
                if let output = try? Gzip.decompress(damaged) {
                    XCTAssertEqual(output, Array(DeflateFixtures.fixedHuffmanText.utf8), "byte \(index) bit \(bit)")
                } else if index >= bodyStart {
                    caughtInBodyAndTrailer += 1
                }
            }
        }
        XCTAssertGreaterThanOrEqual(caughtInBodyAndTrailer, (DeflateFixtures.named.count - bodyStart) * 8 - 7)
    }

    func testStoredGzipHelperRoundTrips() throws {
        // The fixture writer used by the IDX, MNIST and download tests, at block-size edges.
        for size in [0, 1, 65535, 65536, 140_000] {
            let data = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) }
            XCTAssertEqual(try Gzip.decompress(storedGzip(data)), data, "size \(size)")
        }
    }
}
