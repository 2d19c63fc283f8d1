// IDX: the file format of MNIST, a header and then a raw n-dimensional array.
//
// The header is a 4-byte magic number followed by one big-endian UInt32 per
// dimension. The magic itself describes the array: two zero bytes, a type code
// (0x08 = unsigned bytes) and the number of dimensions. So
//
//   0x00000803  images: 3 dimensions (count, rows, cols) of UInt8 pixels,
//               0 = background, 255 = ink, image after image, row by row
//   0x00000801  labels: 1 dimension (count) of UInt8 digits 0...9
//
// Nothing else is in the file, so its size is fixed by the header exactly:
// 16 + count * rows * cols bytes for images, 8 + count for labels. We check
// that equality both ways: fewer bytes means a truncated download, more means
// the wrong file or a damaged one, and either would silently shift every
// image after the damage.

/// What is wrong with an IDX file.
public enum IDXError: Error, Equatable, CustomStringConvertible {
    /// The file is shorter than its fixed-size header.
    case headerTruncated(needed: Int, got: Int)
    /// The magic number is not the expected one (labels given as images, or not IDX at all).
    case wrongMagic(expected: UInt32, found: UInt32)
    /// Dimensions that are zero where they may not be, or too large to be plausible.
    case implausibleDimensions(count: Int, rows: Int, cols: Int)
    /// Fewer data bytes than the header announces.
    case truncated(announced: String, expectedBytes: Int, actualBytes: Int)
    /// More data bytes than the header announces.
    case trailingBytes(announced: String, extraBytes: Int)
    /// A label outside 0...9.
    case labelOutOfRange(index: Int, value: UInt8)

    public var description: String {
        switch self {
        case let .headerTruncated(needed, got):
            return "truncated: an IDX header needs \(needed) bytes but the file has \(got)"
        case let .wrongMagic(expected, found):
            return "not the expected IDX file: magic is \(hex(found)), expected \(hex(expected))"
        case let .implausibleDimensions(count, rows, cols):
            return "implausible IDX dimensions: \(count) images of \(rows)x\(cols)"
        case let .truncated(announced, _, actualBytes):
            return "truncated: header says \(announced) but only \(actualBytes) bytes follow"
        case let .trailingBytes(announced, extraBytes):
            return "\(extraBytes) unexpected bytes after the \(announced) the header announces"
        case let .labelOutOfRange(index, value):
            return "label \(index) is \(value), outside 0...9"
        }
    }

    private func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}

/// Parsers for the two IDX files of MNIST (uncompressed bytes; see Gzip for the .gz layer).
public enum IDX {
    public static let imagesMagic: UInt32 = 0x0000_0803
    public static let labelsMagic: UInt32 = 0x0000_0801

    /// Sanity bounds, checked before anything is allocated. A corrupt header
    /// can claim 2^32 rows; these keep the arithmetic far from overflow and
    /// reject such files with a clear message instead of a failed allocation.
    /// Real MNIST is 28x28 and 60,000 images; the bounds leave ample room.
    public static let maxSide = 1 << 12
    public static let maxCount = 1 << 24

    /// A parsed image file: `count` images of `rows` x `cols` pixels.
    public struct Images: Equatable {
        public let count: Int
        public let rows: Int
        public let cols: Int
        /// [count, rows * cols], row-major, 0 (background) ... 255 (ink).
        public let pixels: [UInt8]
    }

    /// Parses an images file (magic 0x00000803).
    ///
    /// - Throws: `IDXError` when the magic, dimensions or exact size are wrong.
    /// - Complexity: O(bytes).
    public static func parseImages(_ bytes: [UInt8]) throws -> Images {
        let headerSize = 16
        try checkMagic(bytes, expected: imagesMagic, headerSize: headerSize)
        let count = Int(readBigEndian32(bytes, at: 4))
        let rows = Int(readBigEndian32(bytes, at: 8))
        let cols = Int(readBigEndian32(bytes, at: 12))
        guard count <= maxCount, (1...maxSide).contains(rows), (1...maxSide).contains(cols) else {
            throw IDXError.implausibleDimensions(count: count, rows: rows, cols: cols)
        }
        // Within the bounds above, count * rows * cols < 2^48: no overflow.
        let dataSize = count * rows * cols
        let announced = "\(count) images of \(rows)x\(cols) (\(dataSize) bytes)"
        try checkExactSize(bytes.count - headerSize, expected: dataSize, announced: announced)
        return Images(count: count, rows: rows, cols: cols, pixels: Array(bytes[headerSize...]))
    }

    /// Parses a labels file (magic 0x00000801); every label must be a digit 0...9.
    ///
    /// - Throws: `IDXError` when the magic, exact size or a label is wrong.
    /// - Complexity: O(bytes).
    public static func parseLabels(_ bytes: [UInt8]) throws -> [UInt8] {
        let headerSize = 8
        try checkMagic(bytes, expected: labelsMagic, headerSize: headerSize)
        let count = Int(readBigEndian32(bytes, at: 4))
        guard count <= maxCount else { throw IDXError.implausibleDimensions(count: count, rows: 0, cols: 0) }
        try checkExactSize(bytes.count - headerSize, expected: count, announced: "\(count) labels")
        let labels = Array(bytes[headerSize...])
        if let bad = labels.firstIndex(where: { $0 > 9 }) {
            throw IDXError.labelOutOfRange(index: bad, value: labels[bad])
        }
        return labels
    }

    /// The magic first, so that a labels file passed as images says "wrong
    /// file" rather than "header too short"; then the rest of the header.
    static func checkMagic(_ bytes: [UInt8], expected: UInt32, headerSize: Int) throws {
        guard bytes.count >= 4 else { throw IDXError.headerTruncated(needed: headerSize, got: bytes.count) }
        let magic = readBigEndian32(bytes, at: 0)
        guard magic == expected else { throw IDXError.wrongMagic(expected: expected, found: magic) }
        guard bytes.count >= headerSize else { throw IDXError.headerTruncated(needed: headerSize, got: bytes.count) }
    }

    static func checkExactSize(_ actual: Int, expected: Int, announced: String) throws {
        if actual < expected {
            throw IDXError.truncated(announced: announced, expectedBytes: expected, actualBytes: actual)
        }
        if actual > expected { throw IDXError.trailingBytes(announced: announced, extraBytes: actual - expected) }
    }

    /// IDX numbers are big-endian ("network order"), unlike gzip's little-endian ones.
    static func readBigEndian32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16
            | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
    }
}
