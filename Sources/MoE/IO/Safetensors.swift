// Safetensors: the checkpoint format, read and written by hand.
//
// Why this format. PyTorch's own `torch.save` writes a *pickle*, and loading a
// pickle runs whatever code the file asks it to: opening a checkpoint from the
// internet is running a program from the internet. Hugging Face's safetensors
// format is the opposite: a little JSON and raw numbers, nothing executable.
// It is simple enough to implement here in a few hundred lines, and PyTorch
// users can open our checkpoints with `safetensors.torch.load_file`.
//
// The layout of a file:
//
//     bytes 0..<8        N, the header length: an unsigned 64-bit integer, little-endian
//     bytes 8..<8+N      the header: UTF-8 JSON, padded with spaces
//     bytes 8+N..<end    the data area: every tensor's values, back to back
//
// and the header looks like
//
//     {"__metadata__":{"step":"1200"},
//      "moe.gating.gate.weight":{"dtype":"F32","shape":[8,256],"data_offsets":[0,8192]}, ...}
//
// `data_offsets` are [begin, end) byte positions counted from the start of the
// data area, not of the file. Values are row-major and little-endian. We pad
// the header so the data area starts at a multiple of 8 bytes, which lets a
// reader that memory-maps the file use the floats in place, aligned.
//
// Reading treats the file as hostile. A checkpoint may be truncated, corrupted
// or crafted, and every number in it (a length, a shape, an offset) is checked
// before it is used to allocate memory or index bytes. A bad file is an error
// message, never a crash or a read out of bounds.
//
// Only F32 is supported, since that is the only element type this project has.
// Files holding F16 or BF16 tensors are refused with an error naming the dtype.

import Foundation

/// A problem with a safetensors file, as one line: `"SOURCE: problem"`.
public struct SafetensorsError: Error, CustomStringConvertible, LocalizedError {
    /// Where the bytes came from: a path, or a name given to `decode(_:source:)`.
    public var source: String
    /// What is wrong, e.g. "tensor 'x' has dtype F16; only F32 is supported".
    public var problem: String

    public var description: String { "\(source): \(problem)" }
    public var errorDescription: String? { description }
}

/// The contents of a safetensors file: named tensors and string metadata.
public struct SafetensorsFile {
    /// Where the file came from, used to prefix error messages.
    public var source: String
    /// Every tensor, by name.
    public var tensors: [String: Tensor]
    /// The tensor names in the order the header lists them.
    public var order: [String]
    /// The `__metadata__` strings (empty when the file has none).
    public var metadata: [String: String]

    /// The tensor called `name`, checked to have exactly `shape`.
    ///
    /// Loading a checkpoint into a model goes through here, so that a file
    /// saved with another configuration fails with a message that says which
    /// tensor and which sizes differ, instead of a crash deep inside a matmul:
    ///
    ///     let w = try file.tensor("moe.gating.gate.weight", shape: [8, 256])
    ///     // throws "run.safetensors: tensor 'moe.gating.gate.weight' has shape [8, 128], expected [8, 256]"
    public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        guard let tensor = tensors[name] else {
            let shown = order.prefix(8).map { "'\($0)'" }.joined(separator: ", ")
            let more = order.count > 8 ? ", …" : ""
            throw SafetensorsError(source: source, problem: order.isEmpty
                ? "no tensor '\(name)' (the file holds no tensors)"
                : "no tensor '\(name)' (the file holds \(shown)\(more))")
        }
        guard tensor.shape == shape else {
            throw SafetensorsError(source: source,
                problem: "tensor '\(name)' has shape \(tensor.shape), expected \(shape)")
        }
        return tensor
    }
}

/// Reads and writes the safetensors format (F32 tensors only).
public enum Safetensors {
    /// Headers larger than this are refused before anything is allocated. The
    /// reference implementation uses the same limit; real headers are kilobytes.
    public static let maximumHeaderBytes = 100_000_000

    // MARK: Writing

    /// The bytes of a safetensors file holding `tensors` in the given order.
    ///
    ///     let bytes = try Safetensors.encode([("w", Tensor(shape: [2], data: [1, -2]))],
    ///                                        metadata: ["step": "100"])
    ///
    /// - Throws: `SafetensorsError` if a name is empty, reserved or repeated.
    /// - Complexity: O(total number of values).
    public static func encode(_ tensors: [(name: String, tensor: Tensor)],
                              metadata: [String: String] = [:]) throws -> Data {
        try encode(tensors, metadata: metadata, source: "safetensors")
    }

    /// Writes `tensors` to `url` atomically (see `AtomicFile`): a crash while
    /// saving leaves the previous checkpoint intact.
    public static func write(_ tensors: [(name: String, tensor: Tensor)],
                             metadata: [String: String] = [:], to url: URL) throws {
        let bytes = try encode(tensors, metadata: metadata, source: url.path)
        try AtomicFile.write(bytes, to: url)
    }

    private static func encode(_ tensors: [(name: String, tensor: Tensor)],
                               metadata: [String: String], source: String) throws -> Data {
        var seen = Set<String>()
        for (name, _) in tensors {
            let problem = name.isEmpty ? "a tensor name is empty"
                : name == "__metadata__" ? "'__metadata__' is reserved and cannot name a tensor"
                : seen.contains(name) ? "two tensors are named '\(name)'" : nil
            if let problem { throw SafetensorsError(source: source, problem: problem) }
            seen.insert(name)
        }

        // The header. Keys go in the order the Python library writes them
        // (metadata first; dtype, shape, data_offsets), so that files of the
        // same tensors in the same order come out byte for byte the same.
        var entries: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            entries.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for (name, tensor) in tensors {
            let end = offset + 4 * tensor.count  // 4 bytes per F32
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            entries.append("\(jsonString(name)):{\"dtype\":\"F32\",\"shape\":[\(shape)],"
                           + "\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var header = Array("{\(entries.joined(separator: ","))}".utf8)
        while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }

        var file = Data(count: 8 + header.count + offset)
        file.withUnsafeMutableBytes { (out: UnsafeMutableRawBufferPointer) in
            // `.littleEndian` is a no-op on x86 and arm64 and a byte swap on a
            // big-endian machine: either way the file holds little-endian bytes.
            out.storeBytes(of: UInt64(header.count).littleEndian, toByteOffset: 0, as: UInt64.self)
            out.baseAddress!.advanced(by: 8).copyMemory(from: header, byteCount: header.count)
            var position = 8 + header.count
            for (_, tensor) in tensors {
                for value in tensor.data {
                    out.storeBytes(of: value.bitPattern.littleEndian, toByteOffset: position, as: UInt32.self)
                    position += 4
                }
            }
        }
        return file
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped.
    /// Public because the programs that print JSON by hand (`pretrained-moe`) need the same escaping.
    public static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    // MARK: Reading

    /// Reads and validates the safetensors file at `url`.
    ///
    /// - Throws: `SafetensorsError` (prefixed with the path) if the file cannot
    ///   be read or is not a valid F32 safetensors file.
    public static func read(from url: URL) throws -> SafetensorsFile {
        // A regular file only: a folder, /dev/zero or a pipe gets its own message (InputFile).
        let bytes: Data
        do { bytes = try InputFile.read(url, mapped: true) } catch let e as InputFileError {
            throw SafetensorsError(source: url.path, problem: e.problem)
        }
        return try decode(bytes, source: url.path)
    }

    /// Parses and validates the bytes of a safetensors file.
    ///
    /// Checks, in this order: the length prefix, the header (UTF-8, JSON, an
    /// object), each entry (fields, types, dtype, shape, offsets, size), then
    /// the layout (no two tensors overlap, no byte of the data area is unused).
    ///
    /// - Parameter source: names the bytes in error messages, e.g. a path.
    /// - Complexity: O(file size), plus O(T log T) to sort T tensors by offset.
    public static func decode(_ data: Data, source: String) throws -> SafetensorsFile {
        func failure(_ problem: String) -> SafetensorsError {
            SafetensorsError(source: source, problem: problem)
        }
        return try data.withUnsafeBytes { (file: UnsafeRawBufferPointer) -> SafetensorsFile in
            // 1. The length prefix, checked before it sizes anything.
            guard file.count >= 8 else {
                throw failure("file is \(file.count) bytes, too short for the 8-byte header length")
            }
            let declared = UInt64(littleEndian: file.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
            guard declared <= UInt64(maximumHeaderBytes) else {
                throw failure("header length \(declared) is absurd (the limit is \(maximumHeaderBytes) bytes)")
            }
            let headerLength = Int(declared)
            guard headerLength <= file.count - 8 else {
                throw failure("header length \(headerLength) is larger than the \(file.count - 8) bytes after it")
            }
            let dataStart = 8 + headerLength
            let dataSize = file.count - dataStart

            // 2. The header: UTF-8 text holding one JSON object.
            let header = [UInt8](file[8..<dataStart])
            // Decoding repairs invalid UTF-8 with U+FFFD, so a change means it was invalid.
            guard String(decoding: header, as: UTF8.self).utf8.elementsEqual(header) else {
                throw failure("header is not valid UTF-8")
            }
            guard header.first == UInt8(ascii: "{") else {
                throw failure("header does not start with '{' (a JSON object)")
            }
            let document: JSONValue
            do {
                var parser = JSONParser(bytes: header)
                document = try parser.parseDocument()
            } catch let error as JSONParser.SyntaxError {
                throw failure("header is not valid JSON: \(error.message)")
            }
            guard case .object(let members) = document else { throw failure("header is not a JSON object") }

            // 3. Each entry on its own.
            var metadata: [String: String] = [:]
            var entries: [(name: String, shape: [Int], begin: Int, end: Int)] = []
            for (name, value) in members {
                if name == "__metadata__" {
                    guard case .object(let pairs) = value else {
                        throw failure("'__metadata__' is \(value.kind), expected an object of strings")
                    }
                    for (key, item) in pairs {
                        guard case .string(let text) = item else {
                            throw failure("metadata '\(key)' is \(item.kind), expected a string")
                        }
                        metadata[key] = text
                    }
                    continue
                }
                guard !name.isEmpty else { throw failure("a tensor name is empty") }
                let entry = try parseEntry(name, value, dataSize: dataSize, failure: failure)
                entries.append((name, entry.shape, entry.begin, entry.end))
            }

            // 4. The layout. Walk the tensors in offset order with a cursor at
            // the end of the bytes accounted for so far: a tensor starting
            // before the cursor overlaps, one starting after it leaves a gap.
            // Empty tensors occupy no bytes and cannot overlap anything.
            var cursor = 0
            var previous = ""
            for entry in entries.filter({ $0.begin < $0.end }).sorted(by: { $0.begin < $1.begin }) {
                if entry.begin < cursor {
                    throw failure("tensors '\(previous)' and '\(entry.name)' overlap in the data area")
                }
                if entry.begin > cursor {
                    throw failure("bytes \(cursor)..<\(entry.begin) of the data area belong to no tensor")
                }
                cursor = entry.end
                previous = entry.name
            }
            if cursor != dataSize {
                throw failure("bytes \(cursor)..<\(dataSize) of the data area belong to no tensor")
            }

            // 5. The values, now known to lie inside the file.
            var tensors: [String: Tensor] = [:]
            for entry in entries {
                let count = (entry.end - entry.begin) / 4
                let values = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                    for i in 0..<count {
                        let bits = file.loadUnaligned(fromByteOffset: dataStart + entry.begin + 4 * i, as: UInt32.self)
                        buffer[i] = Float(bitPattern: UInt32(littleEndian: bits))
                    }
                    initialized = count
                }
                tensors[entry.name] = Tensor(shape: entry.shape, data: values)
            }
            return SafetensorsFile(source: source, tensors: tensors,
                                   order: entries.map(\.name), metadata: metadata)
        }
    }

    /// Checks one `"name": {"dtype": …, "shape": […], "data_offsets": [b, e]}` entry.
    private static func parseEntry(_ name: String, _ value: JSONValue, dataSize: Int,
                                   failure: (String) -> SafetensorsError)
        throws -> (shape: [Int], begin: Int, end: Int) {
        guard case .object(let fields) = value else {
            throw failure("entry '\(name)' is \(value.kind), expected an object")
        }
        func field(_ key: String) throws -> JSONValue {
            guard let found = fields.first(where: { $0.key == key }) else {
                throw failure("tensor '\(name)' has no '\(key)'")
            }
            return found.value
        }
        func integers(_ key: String) throws -> [Int] {
            guard case .array(let items) = try field(key) else {
                throw failure("tensor '\(name)': '\(key)' is \(try field(key).kind), expected an array")
            }
            return try items.map { item in
                guard case .integer(let number) = item, number >= 0 else {
                    throw failure("tensor '\(name)': '\(key)' holds \(item.text), expected non-negative integers")
                }
                return number
            }
        }

        guard case .string(let dtype) = try field("dtype") else {
            throw failure("tensor '\(name)': 'dtype' is \(try field("dtype").kind), expected a string")
        }
        guard dtype == "F32" else {
            throw failure("tensor '\(name)' has dtype \(dtype); only F32 is supported"
                          + " (in PyTorch, save tensor.float())")
        }

        let shape = try integers("shape")
        // count = product of dimensions, then 4 bytes each; either may overflow.
        var byteCount = 4
        for dimension in shape {
            let (product, overflow) = byteCount.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw failure("tensor '\(name)' has shape \(shape), too large to address") }
            byteCount = product
        }

        let offsets = try integers("data_offsets")
        guard offsets.count == 2 else {
            throw failure("tensor '\(name)': 'data_offsets' has \(offsets.count) numbers, expected [begin, end]")
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin <= end, end <= dataSize else {
            throw failure("tensor '\(name)': data_offsets [\(begin), \(end)] do not fit the data area of \(dataSize) bytes")
        }
        guard end - begin == byteCount else {
            throw failure("tensor '\(name)' of shape \(shape) needs \(byteCount) bytes,"
                          + " but data_offsets [\(begin), \(end)] span \(end - begin)")
        }
        return (shape, begin, end)
    }
}

// MARK: - A strict little JSON reader

// Why not JSONSerialization: it forgets the order of keys (we report the file
// order), silently keeps one of two equal keys (a hostile header could then
// hide a tensor), and on Darwin lets `true` pass as the number 1. A reader for
// the JSON subset a header needs is short enough to own.

/// A parsed JSON value. Objects keep their keys in file order.
private indirect enum JSONValue {
    case object([(key: String, value: JSONValue)])
    case array([JSONValue])
    case string(String)
    case integer(Int)        // a number written without fraction or exponent that fits in Int
    case otherNumber(String) // any other number, kept as written
    case bool(Bool)
    case null

    /// "an object", "a string", …: for error messages about wrong types.
    var kind: String {
        switch self {
        case .object: return "an object"
        case .array: return "an array"
        case .string: return "a string"
        case .integer, .otherNumber: return "a number"
        case .bool: return "a boolean"
        case .null: return "null"
        }
    }

    /// A short rendering of a value for error messages.
    var text: String {
        switch self {
        case .integer(let number): return String(number)
        case .otherNumber(let written): return written
        case .string(let string): return "\"\(string.prefix(40))\""
        case .bool(let flag): return String(flag)
        default: return kind
        }
    }
}

/// A recursive-descent parser over the header bytes (already known to be UTF-8).
private struct JSONParser {
    struct SyntaxError: Error { var message: String }

    let bytes: [UInt8]
    var position = 0
    var depth = 0
    /// A header nests three levels deep; a hostile `[[[[…` must not exhaust the stack.
    let maximumDepth = 32

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// One value, surrounded only by whitespace (which includes the header's padding).
    mutating func parseDocument() throws -> JSONValue {
        let value = try parseValue()
        skipWhitespace()
        guard position == bytes.count else { throw error("unexpected text after the end") }
        return value
    }

    private func error(_ what: String) -> SyntaxError {
        SyntaxError(message: "\(what) at byte \(position)")
    }

    private mutating func skipWhitespace() {
        while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
    }

    /// Consumes `byte` (after whitespace) if it is next.
    private mutating func take(_ byte: Character) -> Bool {
        skipWhitespace()
        guard position < bytes.count, bytes[position] == byte.asciiValue! else { return false }
        position += 1
        return true
    }

    private mutating func parseValue() throws -> JSONValue {
        skipWhitespace()
        guard position < bytes.count else { throw error("unexpected end") }
        switch bytes[position] {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            depth += 1
            defer { depth -= 1 }
            guard depth <= maximumDepth else { throw error("nesting deeper than \(maximumDepth)") }
            return bytes[position] == UInt8(ascii: "{") ? try parseObject() : try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected character")
        }
    }

    private mutating func parseObject() throws -> JSONValue {
        position += 1  // {
        var members: [(key: String, value: JSONValue)] = []
        var keys = Set<String>()
        if take("}") { return .object(members) }
        repeat {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw error("expected a key") }
            let key = try parseString()
            // JSON allows repeated keys; a header must not, or one tensor could shadow another.
            guard keys.insert(key).inserted else { throw error("key '\(key)' appears twice") }
            guard take(":") else { throw error("expected ':'") }
            members.append((key, try parseValue()))
        } while take(",")
        guard take("}") else { throw error("expected ',' or '}'") }
        return .object(members)
    }

    private mutating func parseArray() throws -> JSONValue {
        position += 1  // [
        var items: [JSONValue] = []
        if take("]") { return .array(items) }
        repeat { items.append(try parseValue()) } while take(",")
        guard take("]") else { throw error("expected ',' or ']'") }
        return .array(items)
    }

    private mutating func literal(_ word: String) throws {
        let expected = Array(word.utf8)
        guard bytes.count - position >= expected.count,
              bytes[position..<position + expected.count].elementsEqual(expected)
        else { throw error("unexpected character") }
        position += expected.count
    }

    /// -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?
    private mutating func parseNumber() throws -> JSONValue {
        let start = position
        func digits() -> Int {
            let first = position
            while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) { position += 1 }
            return position - first
        }
        if bytes[position] == UInt8(ascii: "-") { position += 1 }
        let integerStart = position
        let integerDigits = digits()
        guard integerDigits > 0 else { throw error("expected a digit") }
        guard integerDigits == 1 || bytes[integerStart] != UInt8(ascii: "0") else { throw error("leading zero") }
        var isInteger = true
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard digits() > 0 else { throw error("expected a digit") }
            isInteger = false
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
            guard digits() > 0 else { throw error("expected a digit") }
            isInteger = false
        }
        let written = String(decoding: bytes[start..<position], as: UTF8.self)
        if isInteger, let number = Int(written) { return .integer(number) }  // Int() fails on overflow
        return .otherNumber(written)
    }

    private mutating func parseString() throws -> String {
        position += 1  // opening quote
        var utf8: [UInt8] = []
        while true {
            guard position < bytes.count else { throw error("unterminated string") }
            let byte = bytes[position]
            position += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: utf8, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard position < bytes.count else { throw error("unterminated string") }
                let escape = bytes[position]
                position += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escape)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"): UTF8.encode(try parseUnicodeEscape()) { utf8.append($0) }
                default: throw error("invalid escape")
                }
            case 0..<0x20:
                throw error("control character inside a string")
            default:
                utf8.append(byte)
            }
        }
    }

    /// The scalar of `\uXXXX` (the `\u` already read), joining a UTF-16
    /// surrogate pair `\uD83D\uDE00` into one scalar.
    private mutating func parseUnicodeEscape() throws -> Unicode.Scalar {
        func hex4() throws -> UInt32 {
            guard bytes.count - position >= 4 else { throw error("invalid \\u escape") }
            var value: UInt32 = 0
            for byte in bytes[position..<position + 4] {
                guard let digit = Character(Unicode.Scalar(byte)).hexDigitValue else { throw error("invalid \\u escape") }
                value = value * 16 + UInt32(digit)
            }
            position += 4
            return value
        }
        let first = try hex4()
        var value = first
        if (0xD800...0xDBFF).contains(first) {
            guard bytes.count - position >= 2, bytes[position] == UInt8(ascii: "\\"),
                  bytes[position + 1] == UInt8(ascii: "u") else { throw error("unpaired surrogate") }
            position += 2
            let second = try hex4()
            guard (0xDC00...0xDFFF).contains(second) else { throw error("unpaired surrogate") }
            value = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        }
        guard let scalar = Unicode.Scalar(value) else { throw error("unpaired surrogate") }
        return scalar
    }
}
