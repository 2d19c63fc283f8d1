// DEFLATE decompression (RFC 1951): the compressed format inside every .gz file.
//
// A DEFLATE stream is a sequence of *blocks*. Each block starts with a 3-bit
// header: one bit BFINAL (is this the last block?) and two bits BTYPE:
//
//   BTYPE 0  stored:  the bytes follow verbatim, preceded by their count LEN
//                     and its complement NLEN (a cheap integrity check).
//   BTYPE 1  fixed:   Huffman-coded with a code the RFC fixes once and for all.
//   BTYPE 2  dynamic: Huffman-coded with codes that the block itself
//                     describes first, tuned to the block's statistics.
//   BTYPE 3  invalid.
//
// A Huffman-coded block is a stream of symbols from two alphabets. The
// literal/length alphabet has 0...255 for "output this byte", 256 for "end
// of block" and 257...285 for "copy `length` bytes"; a length symbol is always
// followed by a symbol from the distance alphabet (0...29) saying how far back
// in the output the copy starts. That back-reference (LZ77) is where most of
// the compression comes from: MNIST digits repeat the same rows of zeros and
// the same stroke edges over and over.
//
// Goals, in order: (1) never crash, hang or read out of bounds, whatever the
// input: a downloaded file is untrusted, so every malformed stream is a thrown
// `InflateError`; (2) readable, one idea per function; (3) fast enough that the
// 47 MB of MNIST training images come out of their 9.7 MB .gz in well under a
// second, which needs a table lookup per symbol instead of a walk per bit.

/// What is wrong with a DEFLATE stream. Every malformed input ends in one of these;
/// none of them leaves partial output behind.
public enum InflateError: Error, Equatable, CustomStringConvertible {
    /// The input ended before the final block did.
    case truncated
    /// A block header with BTYPE = 3, which RFC 1951 reserves.
    case invalidBlockType
    /// A stored block whose LEN and NLEN are not one's complements of each other.
    case storedLengthMismatch(length: Int, complement: Int)
    /// A dynamic block announcing more than 286 literal/length or 30 distance codes.
    case tooManyCodes(literalLengthCodes: Int, distanceCodes: Int)
    /// Code lengths that claim more codes than the bits can hold (Kraft sum > 1).
    case oversubscribedCode(String)
    /// Code lengths that leave bit patterns unused (Kraft sum < 1), where that is not allowed.
    case incompleteCode(String)
    /// Code-length symbol 16 ("repeat the previous length") with no previous length.
    case repeatWithoutPreviousLength
    /// A run of code lengths that goes past the number of codes the header announced.
    case codeLengthsOverrun
    /// A literal/length code with no code for symbol 256, so the block could never end.
    case missingEndOfBlockCode
    /// Bits that match no code of the named alphabet.
    case invalidCode(String)
    /// Literal/length symbol 286 or 287: part of the fixed code, but meaning nothing.
    case invalidLengthSymbol(Int)
    /// Distance symbol 30 or 31: part of the fixed code, but meaning nothing.
    case invalidDistanceSymbol(Int)
    /// A copy reaching further back than the output produced so far.
    case distanceTooFarBack(distance: Int, available: Int)
    /// The output would exceed the caller's limit (a "zip bomb" guard).
    case outputLimitExceeded(limit: Int)

    public var description: String {
        switch self {
        case .truncated: return "truncated: the compressed data ends before its final block"
        case .invalidBlockType: return "corrupt: block type 3 does not exist"
        case let .storedLengthMismatch(length, complement):
            return "corrupt: stored block length \(length) does not match its complement \(complement)"
        case let .tooManyCodes(literalLengthCodes, distanceCodes):
            return "corrupt: block declares \(literalLengthCodes) literal/length codes (max 286) "
                + "and \(distanceCodes) distance codes (max 30)"
        case let .oversubscribedCode(name): return "corrupt: over-subscribed \(name) code"
        case let .incompleteCode(name): return "corrupt: incomplete \(name) code"
        case .repeatWithoutPreviousLength: return "corrupt: code length repeat with no previous length"
        case .codeLengthsOverrun: return "corrupt: code length repeat runs past the last code"
        case .missingEndOfBlockCode: return "corrupt: literal/length code has no end-of-block symbol"
        case let .invalidCode(name): return "corrupt: bits match no \(name) code"
        case let .invalidLengthSymbol(symbol): return "corrupt: invalid literal/length symbol \(symbol)"
        case let .invalidDistanceSymbol(symbol): return "corrupt: invalid distance symbol \(symbol)"
        case let .distanceTooFarBack(distance, available):
            return "corrupt: copy from \(distance) bytes back, but only \(available) bytes were produced"
        case let .outputLimitExceeded(limit): return "too large: output exceeds the limit of \(limit) bytes"
        }
    }
}

/// A DEFLATE (RFC 1951) decoder: stored, fixed-Huffman and dynamic-Huffman blocks.
///
///     let raw = try Inflate.decompress(deflateBytes)
///
/// Bytes after the final block are ignored (a container such as gzip owns them).
public enum Inflate {
    /// Decompresses a raw DEFLATE stream (no zlib or gzip wrapper).
    ///
    /// - Parameter maxOutput: the most bytes the caller will accept. DEFLATE can
    ///   expand 1032-fold, so a few kilobytes of hostile input can ask for
    ///   gigabytes; past this limit decoding stops with `.outputLimitExceeded`.
    /// - Throws: `InflateError` for any malformed or truncated stream.
    /// - Complexity: O(input + output).
    public static func decompress(_ input: [UInt8], maxOutput: Int = 1 << 30) throws -> [UInt8] {
        try decompress(input, from: 0, maxOutput: maxOutput, sizeHint: 0).output
    }

    /// Decompresses the stream starting at `input[start]`, and also returns the
    /// index just past its final block, where a container's trailer begins.
    /// `sizeHint` (e.g. gzip's ISIZE) only pre-sizes the output buffer.
    static func decompress(_ input: [UInt8], from start: Int, maxOutput: Int,
                           sizeHint: Int) throws -> (output: [UInt8], end: Int) {
        let limit = max(0, maxOutput)
        var inflater = Inflater(input: input, start: start, maxOutput: limit)
        // Capped by the limit and by DEFLATE's best ratio (258 bytes per 2 bits
        // is ~1032:1), so a lying hint cannot make us reserve much.
        inflater.output.reserveCapacity(max(0, min(sizeHint, limit, 1032 * (input.count - inflater.position) + 1024)))
        try inflater.decodeAllBlocks()
        return (inflater.output, inflater.endOfStream)
    }
}

/// The decoder's state: where it is in the input and what it has produced.
struct Inflater {
    let input: [UInt8]
    let maxOutput: Int
    var output: [UInt8] = []

    // Bit order. DEFLATE fills each byte starting from its least significant
    // bit, and numbers (header fields, extra bits) are written least
    // significant bit first. Why: a decoder can then keep the stream in a
    // machine word, `bitBuffer`, with the next unread bit at bit 0 and each
    // new byte appended above the bits it already has. Reading an n-bit field
    // of any width is `bitBuffer & (2^n - 1)` and a shift right by n, the two
    // cheapest operations there are; nothing is assembled across byte
    // boundaries by hand. Huffman codes are the one exception: they are sent
    // most significant bit first, so the bit that decides between the two
    // halves of the code tree arrives first. In `bitBuffer` a code therefore
    // appears bit-reversed, which is how HuffmanDecoder's table indexes it.
    var position: Int          // next input byte not yet in bitBuffer
    var bitBuffer: UInt64 = 0  // unread bits, next one in bit 0
    var bitCount = 0           // how many of bitBuffer's low bits are real

    init(input: [UInt8], start: Int, maxOutput: Int) {
        self.input = input
        self.position = min(max(start, 0), input.count)
        self.maxOutput = maxOutput
    }

    /// Index of the first input byte after the stream: the partly used last
    /// byte counts as used, whole bytes still in the buffer do not.
    var endOfStream: Int { position - bitCount / 8 }

    // MARK: Bits

    /// Tops the buffer up to at least 57 bits, or to whatever input is left.
    mutating func refill() {
        while bitCount <= 56 && position < input.count {
            bitBuffer |= UInt64(input[position]) << UInt64(bitCount)
            position += 1
            bitCount += 8
        }
    }

    /// Reads an n-bit number (n <= 32), least significant bit first.
    mutating func readBits(_ n: Int) throws -> Int {
        if bitCount < n {
            refill()
            guard bitCount >= n else { throw InflateError.truncated }
        }
        let value = Int(truncatingIfNeeded: bitBuffer & ((1 << UInt64(n)) - 1))
        bitBuffer >>= UInt64(n)
        bitCount -= n
        return value
    }

    /// Decodes one Huffman-coded symbol. The fast path looks the next
    /// `fastBits` bits up in a table; longer codes, and bits that match no
    /// code, take the slow path.
    mutating func decodeSymbol(_ code: HuffmanDecoder) throws -> Int {
        if bitCount < 15 { refill() }
        let entry = code.fastTable[Int(truncatingIfNeeded: bitBuffer) & HuffmanDecoder.fastMask]
        let length = Int(entry & 0xF)
        if length != 0 && length <= bitCount {  // zero-padded bits past the input never count
            bitBuffer >>= UInt64(length)
            bitCount -= length
            return Int(entry >> 4)
        }
        return try decodeSymbolBitByBit(code)
    }

    /// The slow path: walks the canonical code one bit at a time. At each
    /// length the codes of that length form one consecutive range of numbers
    /// starting at `first`; the bits read so far either fall in that range
    /// (found) or lie above it (keep reading). See HuffmanDecoder for why.
    mutating func decodeSymbolBitByBit(_ code: HuffmanDecoder) throws -> Int {
        var bitsSoFar = 0   // the code bits read, first one most significant
        var first = 0       // the smallest code of the current length
        var index = 0       // where that code's symbol sits in symbolsInCodeOrder
        for length in 1...HuffmanDecoder.maxCodeLength {
            guard length <= bitCount else { throw InflateError.truncated }
            bitsSoFar |= Int(truncatingIfNeeded: (bitBuffer >> UInt64(length - 1)) & 1)
            let count = code.countOfLength[length]
            if bitsSoFar - first < count {
                bitBuffer >>= UInt64(length)
                bitCount -= length
                return Int(code.symbolsInCodeOrder[index + bitsSoFar - first])
            }
            index += count
            first = (first + count) << 1
            bitsSoFar <<= 1
        }
        throw InflateError.invalidCode(code.name)
    }

    // MARK: Blocks

    mutating func decodeAllBlocks() throws {
        var isFinal = false
        while !isFinal {
            isFinal = try readBits(1) == 1
            switch try readBits(2) {
            case 0: try copyStoredBlock()
            case 1: try decodeHuffmanBlock(HuffmanDecoder.fixedLiteralLength, HuffmanDecoder.fixedDistance)
            case 2:
                let (literalLength, distance) = try readDynamicCodes()
                try decodeHuffmanBlock(literalLength, distance)
            default: throw InflateError.invalidBlockType
            }
        }
    }

    /// Stored block: skip to the next byte boundary, then LEN, NLEN (= ~LEN)
    /// and LEN raw bytes. Stored blocks are what an encoder emits for data that
    /// does not compress, and what zlib emits for everything at level 0.
    mutating func copyStoredBlock() throws {
        // After dropping the partial byte the buffer holds only whole bytes,
        // so we can hand them back to the input and read bytes directly.
        bitBuffer = 0
        position -= bitCount / 8
        bitCount = 0
        guard input.count - position >= 4 else { throw InflateError.truncated }
        let length = Int(input[position]) | Int(input[position + 1]) << 8
        let complement = Int(input[position + 2]) | Int(input[position + 3]) << 8
        position += 4
        guard length == complement ^ 0xFFFF else {
            throw InflateError.storedLengthMismatch(length: length, complement: complement)
        }
        guard input.count - position >= length else { throw InflateError.truncated }
        guard length <= maxOutput - output.count else { throw InflateError.outputLimitExceeded(limit: maxOutput) }
        output.append(contentsOf: input[position..<(position + length)])
        position += length
    }

    /// The body of a fixed or dynamic block: literals and (length, distance)
    /// copies until the end-of-block symbol 256.
    mutating func decodeHuffmanBlock(_ literalLength: HuffmanDecoder, _ distance: HuffmanDecoder) throws {
        while true {
            let symbol = try decodeSymbol(literalLength)
            if symbol < 256 {
                guard output.count < maxOutput else { throw InflateError.outputLimitExceeded(limit: maxOutput) }
                output.append(UInt8(truncatingIfNeeded: symbol))
                continue
            }
            if symbol == 256 { return }

            // A length symbol names a range of lengths; extra bits pick one.
            let lengthIndex = symbol - 257
            guard lengthIndex < Inflater.lengthBase.count else { throw InflateError.invalidLengthSymbol(symbol) }
            let length = Inflater.lengthBase[lengthIndex] + (try readBits(Inflater.lengthExtraBits[lengthIndex]))

            let distanceSymbol = try decodeSymbol(distance)
            guard distanceSymbol < Inflater.distanceBase.count else {
                throw InflateError.invalidDistanceSymbol(distanceSymbol)
            }
            let back = Inflater.distanceBase[distanceSymbol]
                + (try readBits(Inflater.distanceExtraBits[distanceSymbol]))
            guard back <= output.count else {
                throw InflateError.distanceTooFarBack(distance: back, available: output.count)
            }
            guard length <= maxOutput - output.count else { throw InflateError.outputLimitExceeded(limit: maxOutput) }

            // Byte by byte on purpose: when back < length the copy overlaps
            // the bytes it is writing ("abc" back 3, length 9 gives
            // "abcabcabc"), which is how DEFLATE encodes runs.
            var from = output.count - back
            for _ in 0..<length {
                output.append(output[from])
                from += 1
            }
        }
    }

    // Length and distance base tables (RFC 1951, 3.2.5). Symbol 257 + i means
    // length lengthBase[i] plus the next lengthExtraBits[i] bits read as a
    // number; distance symbol j means distanceBase[j] plus distanceExtraBits[j]
    // bits. The pattern: ranges grow geometrically, so after the first few
    // exact values each pair of symbols doubles its range with one more extra
    // bit. Short, frequent lengths and distances get cheap exact symbols; long
    // rare ones share a symbol and pay in extra bits. Length 258, the most
    // common long run, gets its own symbol (285) with no extra bits.
    static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                             35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lengthExtraBits = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
                                  3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distanceBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193,
                               257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
                               8193, 12289, 16385, 24577]
    static let distanceExtraBits = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6,
                                    7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]

    /// A dynamic block first describes its two codes, compactly:
    ///
    ///   HLIT (5 bits) + 257   literal/length code lengths to read (257...286)
    ///   HDIST (5 bits) + 1    distance code lengths to read (1...30)
    ///   HCLEN (4 bits) + 4    lengths of the *code-length code* to read
    ///   HCLEN x 3 bits        those lengths, in the order `codeLengthOrder`
    ///   then HLIT + HDIST code lengths, themselves Huffman-coded with the
    ///   code-length code: symbols 0...15 are a length, 16 repeats the previous
    ///   length 3-6 times, 17 and 18 write runs of zeros (3-10, 11-138).
    mutating func readDynamicCodes() throws -> (HuffmanDecoder, HuffmanDecoder) {
        let literalLengthCount = try readBits(5) + 257
        let distanceCount = try readBits(5) + 1
        let codeLengthCount = try readBits(4) + 4
        guard literalLengthCount <= 286 && distanceCount <= 30 else {
            throw InflateError.tooManyCodes(literalLengthCodes: literalLengthCount, distanceCodes: distanceCount)
        }

        var codeLengthLengths = [UInt8](repeating: 0, count: 19)
        for i in 0..<codeLengthCount {
            codeLengthLengths[Inflater.codeLengthOrder[i]] = UInt8(try readBits(3))
        }
        let codeLengthCode = try HuffmanDecoder(lengths: codeLengthLengths, name: "code length",
                                                allowsIncomplete: false)

        // One sequence for both alphabets: a run may cross from one to the other.
        let total = literalLengthCount + distanceCount
        var lengths = [UInt8]()
        lengths.reserveCapacity(total)
        while lengths.count < total {
            let symbol = try decodeSymbol(codeLengthCode)
            var value: UInt8 = 0
            var repeats = 1
            switch symbol {
            case 0...15: value = UInt8(symbol)
            case 16:
                guard let previous = lengths.last else { throw InflateError.repeatWithoutPreviousLength }
                value = previous
                repeats = 3 + (try readBits(2))
            case 17: repeats = 3 + (try readBits(3))
            default: repeats = 11 + (try readBits(7))  // 18; the code has no symbol above 18
            }
            guard repeats <= total - lengths.count else { throw InflateError.codeLengthsOverrun }
            lengths.append(contentsOf: repeatElement(value, count: repeats))
        }

        guard lengths[256] != 0 else { throw InflateError.missingEndOfBlockCode }
        let literalLength = try HuffmanDecoder(lengths: Array(lengths[0..<literalLengthCount]),
                                               name: "literal/length", allowsIncomplete: true)
        let distance = try HuffmanDecoder(lengths: Array(lengths[literalLengthCount...]),
                                          name: "distance", allowsIncomplete: true)
        return (literalLength, distance)
    }

    /// The code-length code's lengths arrive in this order, chosen so that the
    /// lengths an encoder rarely uses (1, 2, 14, 15) come last and can be cut
    /// off by a small HCLEN.
    static let codeLengthOrder = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
}

/// A canonical Huffman code, ready for decoding.
///
/// Canonical codes are why a dynamic block only needs to send code *lengths*.
/// Given each symbol's length, the codes follow by a fixed rule:
///   1. shorter codes come before longer ones (numerically, as bit strings);
///   2. within one length, codes are consecutive numbers assigned to the
///      symbols in increasing order.
/// So the first code of length n is (first code of length n-1 + number of
/// codes of length n-1), shifted left by one bit. For lengths A:2 B:1 C:3 D:3
/// that gives B=0, A=10, C=110, D=111.
///
/// A length set is valid when its codes exactly fill the binary tree: the sum
/// of 2^-length over all codes (the Kraft sum) must be 1. Above 1 two symbols
/// would share a code (over-subscribed); below 1 some bit patterns decode to
/// nothing (incomplete). Like zlib, we allow two incomplete cases, both of which
/// real encoders emit: no codes at all (a block with no copies needs no distance
/// code) and a single code of length 1.
struct HuffmanDecoder {
    static let maxCodeLength = 15
    /// Codes up to this many bits are decoded by one lookup. 10 bits is a
    /// 1024-entry table (2 KB), cheap to fill per block and small enough to
    /// stay in L1 cache; it covers nearly every symbol an encoder emits, since
    /// a code of length n is used with probability about 2^-n.
    static let fastBits = 10
    static let fastMask = (1 << fastBits) - 1

    let name: String
    /// [1 << fastBits], indexed by the next fastBits bits of the buffer:
    /// symbol << 4 | code length, or 0 when those bits start no code of at
    /// most fastBits bits (a longer code, or an invalid one).
    let fastTable: [UInt16]
    /// [16]: how many symbols have a code of each length (index 0 unused).
    let countOfLength: [Int]
    /// The symbols that have a code, sorted by (code length, symbol), which is
    /// the order of their codes as numbers.
    let symbolsInCodeOrder: [UInt16]

    init(lengths: [UInt8], name: String, allowsIncomplete: Bool) throws {
        self.name = name
        var count = [Int](repeating: 0, count: HuffmanDecoder.maxCodeLength + 1)
        for length in lengths { count[Int(length)] += 1 }
        count[0] = 0

        // Kraft check in integers: `left` counts the unused codes of the
        // current length; each length doubles them and its codes use some up.
        var left = 1
        for length in 1...HuffmanDecoder.maxCodeLength {
            left = left * 2 - count[length]
            if left < 0 { throw InflateError.oversubscribedCode(name) }
        }
        let used = count.reduce(0, +)
        if left > 0 && !(allowsIncomplete && (used == 0 || (used == 1 && count[1] == 1))) {
            throw InflateError.incompleteCode(name)
        }

        // The smallest code of each length (rule above).
        var nextCode = [Int](repeating: 0, count: HuffmanDecoder.maxCodeLength + 1)
        for length in 1...HuffmanDecoder.maxCodeLength {
            nextCode[length] = (nextCode[length - 1] + count[length - 1]) << 1
        }

        // Sort the symbols by (length, symbol) with a counting sort: symbols of
        // length n start right after all shorter ones, and a pass in symbol
        // order keeps each length's symbols in increasing order.
        var slot = [Int](repeating: 0, count: HuffmanDecoder.maxCodeLength + 1)
        for length in 1..<HuffmanDecoder.maxCodeLength { slot[length + 1] = slot[length] + count[length] }
        var symbols = [UInt16](repeating: 0, count: used)
        for (symbol, l) in lengths.enumerated() where l != 0 {
            symbols[slot[Int(l)]] = UInt16(symbol)
            slot[Int(l)] += 1
        }

        // Every code of n <= fastBits bits fills the table entries whose low n
        // bits equal the code as it sits in the buffer (bit-reversed), for all
        // values of the fastBits - n bits above it.
        var table = [UInt16](repeating: 0, count: 1 << HuffmanDecoder.fastBits)
        for (symbol, l) in lengths.enumerated() where l != 0 {
            let length = Int(l)
            let code = nextCode[length]
            nextCode[length] += 1
            guard length <= HuffmanDecoder.fastBits else { continue }
            var reversed = 0
            for bit in 0..<length where code & (1 << bit) != 0 { reversed |= 1 << (length - 1 - bit) }
            let entry = UInt16(symbol << 4 | length)
            for index in stride(from: reversed, to: table.count, by: 1 << length) { table[index] = entry }
        }

        fastTable = table
        countOfLength = count
        symbolsInCodeOrder = symbols
    }

    // The fixed code of BTYPE 1 (RFC 1951, 3.2.6): literals 0-143 get 8 bits,
    // 144-255 9 bits, 256-279 (end and short lengths) 7 bits, 280-287 8 bits;
    // all 32 distance symbols 5 bits. 286, 287, 30 and 31 have codes but no
    // meaning, which is why decoding checks for them.
    static let fixedLiteralLength = try! HuffmanDecoder(
        lengths: [UInt8](repeating: 8, count: 144) + [UInt8](repeating: 9, count: 112)
            + [UInt8](repeating: 7, count: 24) + [UInt8](repeating: 8, count: 8),
        name: "literal/length", allowsIncomplete: false)
    static let fixedDistance = try! HuffmanDecoder(
        lengths: [UInt8](repeating: 5, count: 32), name: "distance", allowsIncomplete: false)
}
