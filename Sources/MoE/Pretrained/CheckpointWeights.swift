// CheckpointWeights: a Hugging Face checkpoint's safetensors files, memory-mapped.
//
// `Safetensors.read` (IO/Safetensors.swift) copies every F32 tensor into a
// Float array: right for our small training checkpoints, wrong for a
// pretrained model. OLMoE-1B-7B is 14 GB of BF16; as Float it would be 28 GB.
// So here the files are mapped into memory (mmap) and each tensor is only a
// pointer into the mapping with a dtype and a shape. The operating system
// pages the bytes in when a kernel first reads them, and can drop them again
// under memory pressure, since they are backed by the file. 16-bit weights
// stay 16-bit; the kernels (PretrainedKernels.swift) widen them to Float in
// registers as they multiply.
//
// The layout is the one Safetensors.swift documents: an 8-byte little-endian
// header length N, N bytes of JSON, then the data area. Big checkpoints are
// sharded: `model.safetensors.index.json` maps each tensor name to the shard
// that holds it. Everything is checked before use — that every shard the
// index names exists, that the header fits the file, that every tensor's
// bytes lie inside the file (a truncated download fails here, naming the
// shard) — so a bad folder is a one-line error before any large allocation.
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The element types a checkpoint tensor may have.
public enum WeightDType: String {
    case f32 = "F32", bf16 = "BF16", f16 = "F16"
    /// Bytes per element.
    public var size: Int { self == .f32 ? 4 : 2 }
}

/// A read-only memory mapping of a whole file, unmapped when released.
final class MappedFile {
    let base: UnsafeRawPointer
    let count: Int
    let path: String

    init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw PretrainedError(file: path, problem: "cannot open (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw PretrainedError(file: path, problem: "cannot stat") }
        count = Int(info.st_size)
        guard count > 0 else { throw PretrainedError(file: path, problem: "file is empty") }
        guard let mapped = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw PretrainedError(file: path, problem: "cannot memory-map (\(String(cString: strerror(errno))))")
        }
        base = UnsafeRawPointer(mapped)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), count) }
}

/// One tensor of a checkpoint: a dtype, a shape and a pointer into a mapped file.
public struct WeightTensor {
    public let name: String
    public let dtype: WeightDType
    public let shape: [Int]
    /// The first element, inside `file`'s mapping.
    let base: UnsafeRawPointer
    /// Keeps the mapping alive as long as the tensor.
    let file: MappedFile

    public var count: Int { shape.reduce(1, *) }
    public var byteCount: Int { count * dtype.size }

    /// Element i, widened to Float.
    @inline(__always)
    func value(_ i: Int) -> Float {
        switch dtype {
        case .f32: return base.loadUnaligned(fromByteOffset: 4 * i, as: Float.self)
        case .bf16: return Float(bitPattern: UInt32(base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
        case .f16: return halfToFloat(base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
        }
    }

    /// All elements as Floats: for the small tensors (norms, biases) only.
    public func floats() -> [Float] { (0..<count).map(value) }

    /// Matrix i of a rank-3 tensor [n, rows, cols], as a [rows, cols] view (fused experts).
    func matrix(_ i: Int) -> WeightTensor {
        let rows = shape[1], cols = shape[2]
        return WeightTensor(name: "\(name)[\(i)]", dtype: dtype, shape: [rows, cols],
                            base: base + i * rows * cols * dtype.size, file: file)
    }

    /// Rows `range` of a matrix [rows, cols], as a view.
    func rows(_ range: Range<Int>) -> WeightTensor {
        let cols = shape[1]
        return WeightTensor(name: "\(name)[\(range.lowerBound)..<\(range.upperBound)]", dtype: dtype,
                            shape: [range.count, cols], base: base + range.lowerBound * cols * dtype.size, file: file)
    }
}

/// IEEE half precision → Float, by hand (Float16 is not on every platform Swift runs on).
@inline(__always)
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = Int((h >> 10) & 0x1F)
    let mantissa = UInt32(h & 0x3FF)
    if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }  // inf, NaN
    if exponent == 0 {
        // Zero or subnormal: mantissa · 2⁻²⁴.
        let magnitude = Float(mantissa) * Float(bitPattern: 0x3380_0000)
        return sign == 0 ? magnitude : -magnitude
    }
    return Float(bitPattern: sign | UInt32(exponent + 112) << 23 | (mantissa << 13))
}

/// Every tensor of a checkpoint folder, by name, across its shards.
public final class CheckpointWeights {
    public let directory: URL
    public private(set) var tensors: [String: WeightTensor] = [:]

    /// Opens `model.safetensors`, or the shards listed by `model.safetensors.index.json`.
    public init(directory: URL) throws {
        self.directory = directory
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        let single = directory.appendingPathComponent("model.safetensors")
        var shards: [String] = []
        var expected: [String: String] = [:]   // tensor name → shard, from the index
        if FileManager.default.fileExists(atPath: index.path) {
            guard let data = FileManager.default.contents(atPath: index.path),
                  let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                  let map = object["weight_map"] as? [String: Any] else {
                throw PretrainedError(file: index.path, problem: "not a JSON object with a \"weight_map\" object")
            }
            for (name, value) in map {
                guard let shard = value as? String, !shard.contains("/"), !shard.isEmpty else {
                    throw PretrainedError(file: index.path, problem: "weight_map entry '\(name)' is not a file name in this folder")
                }
                expected[name] = shard
            }
            shards = Set(expected.values).sorted()
            for shard in shards where !FileManager.default.fileExists(atPath: directory.appendingPathComponent(shard).path) {
                throw PretrainedError(file: index.path, problem: "names shard '\(shard)', which is not in the folder")
            }
        } else if FileManager.default.fileExists(atPath: single.path) {
            shards = ["model.safetensors"]
        } else {
            throw PretrainedError(file: directory.path, problem: "no model.safetensors or model.safetensors.index.json")
        }
        for shard in shards {
            let path = directory.appendingPathComponent(shard).path
            for tensor in try CheckpointWeights.readHeader(MappedFile(path: path)) {
                if let owner = expected[tensor.name], owner != shard {
                    throw PretrainedError(file: path, problem: "holds tensor '\(tensor.name)', which the index puts in '\(owner)'")
                }
                tensors[tensor.name] = tensor
            }
        }
        for (name, shard) in expected where tensors[name] == nil {
            throw PretrainedError(file: directory.appendingPathComponent(shard).path,
                                  problem: "lacks tensor '\(name)', which the index says it holds")
        }
    }

    /// Validates a shard's header and returns its tensors as views into the mapping.
    static func readHeader(_ file: MappedFile) throws -> [WeightTensor] {
        func fail(_ problem: String) -> PretrainedError { PretrainedError(file: file.path, problem: problem) }
        guard file.count >= 8 else { throw fail("file is \(file.count) bytes, too short for a safetensors header") }
        let declared = UInt64(littleEndian: file.base.loadUnaligned(as: UInt64.self))
        guard declared <= UInt64(Safetensors.maximumHeaderBytes), Int(declared) <= file.count - 8 else {
            throw fail("header length \(declared) does not fit the \(file.count)-byte file (truncated or not safetensors)")
        }
        let headerLength = Int(declared)
        let header = Data(bytes: file.base + 8, count: headerLength)
        guard let object = (try? JSONSerialization.jsonObject(with: header)) as? [String: Any] else {
            throw fail("header is not a JSON object")
        }
        let dataStart = 8 + headerLength
        let dataSize = file.count - dataStart
        var result: [WeightTensor] = []
        var needed = 0
        for (name, value) in object where name != "__metadata__" {
            guard let entry = value as? [String: Any], let dtypeName = entry["dtype"] as? String,
                  let shapeList = entry["shape"] as? [Any], let offsetList = entry["data_offsets"] as? [Any] else {
                throw fail("tensor '\(name)' lacks dtype, shape or data_offsets")
            }
            guard let dtype = WeightDType(rawValue: dtypeName) else {
                throw fail("tensor '\(name)' has dtype \(dtypeName); supported: F32, BF16, F16")
            }
            let shape = shapeList.compactMap { ($0 as? NSNumber)?.intValue }
            let offsets = offsetList.compactMap { ($0 as? NSNumber)?.intValue }
            guard shape.count == shapeList.count, shape.allSatisfy({ $0 >= 0 && $0 < 1 << 40 }),
                  offsetList.count == 2, offsets.count == 2, offsets[0] >= 0, offsets[0] <= offsets[1] else {
                throw fail("tensor '\(name)' has a malformed shape or data_offsets")
            }
            var elements = 1
            for d in shape {
                let (p, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow, p < 1 << 44 else { throw fail("tensor '\(name)' has shape \(shape), too large") }
                elements = p
            }
            guard offsets[1] - offsets[0] == elements * dtype.size else {
                throw fail("tensor '\(name)' of shape \(shape) and dtype \(dtypeName) needs \(elements * dtype.size) bytes, data_offsets span \(offsets[1] - offsets[0])")
            }
            needed = max(needed, offsets[1])
            result.append(WeightTensor(name: name, dtype: dtype, shape: shape,
                                       base: file.base + dataStart + offsets[0], file: file))
        }
        guard needed <= dataSize else {
            throw fail("is truncated: its header needs \(dataStart + needed) bytes, the file has \(file.count)")
        }
        return result
    }

    /// The tensor `name`, checked to have `shape` (and a supported dtype).
    ///
    ///     let q = try weights.tensor("model.layers.0.self_attn.q_proj.weight", shape: [H·Dh, D])
    ///     // throws "…/model.safetensors: tensor '…q_proj.weight' has shape [64, 32], expected [64, 64]"
    public func tensor(_ name: String, shape: [Int]) throws -> WeightTensor {
        guard let tensor = tensors[name] else {
            throw PretrainedError(file: directory.path, problem: "missing tensor '\(name)' (expected shape \(shape))")
        }
        guard tensor.shape == shape else {
            throw PretrainedError(file: tensor.file.path, problem: "tensor '\(name)' has shape \(tensor.shape), expected \(shape)")
        }
        return tensor
    }

    /// Whether the checkpoint has a tensor called `name`.
    public func contains(_ name: String) -> Bool { tensors[name] != nil }

    /// Bytes of all tensors (what the checkpoint weighs in memory, mapped).
    public var byteCount: Int { tensors.values.reduce(0) { $0 + $1.byteCount } }
}
