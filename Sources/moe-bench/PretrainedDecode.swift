// moe-bench --only pretrained: prefill and decode speed of a pretrained-size MoE.
//
// A checkpoint with random BF16 weights at the real dimensions of IBM's
// granite-3.1-1b-a400m (24 layers, width 1024, 16 query and 8 key/value heads
// of 64, 32 experts of width 512 with top-8 routing, vocabulary 49,155, tied
// embeddings) is written to a temporary folder and loaded the way
// `pretrained-moe` loads any checkpoint (memory-mapped, 16-bit kept 16-bit).
// Then:
//   * memory bandwidth: the best of a few multi-threaded passes summing 256 MB;
//   * prefill: one forward pass over a 128-token prompt, tokens/s;
//   * decode: 32 single-token steps on the KV cache, tokens/s;
//   * resident memory (VmRSS) against the checkpoint's size;
//   * the decode bound: bandwidth / bytes of the weights one token reads
//     (attention, router, the 8 chosen experts of every layer, the head), and
//     how close decode comes to it (Notebooks/part5-pretrained.md, §6).
// Random weights route tokens as a trained model would not, but every token
// still reads exactly 8 experts per layer, which is all the bound depends on.
import Foundation
import MoE

struct PretrainedBenchShape {
    let layers = 24, width = 1024, heads = 16, kvHeads = 8, headSize = 64
    let experts = 32, k = 8, expertWidth = 512, vocabulary = 49_155

    /// Every tensor name and shape, in file order.
    var tensors: [(String, [Int])] {
        var list: [(String, [Int])] = [("model.embed_tokens.weight", [vocabulary, width]), ("model.norm.weight", [width])]
        for i in 0..<layers {
            let p = "model.layers.\(i)."
            list += [(p + "input_layernorm.weight", [width]), (p + "post_attention_layernorm.weight", [width]),
                     (p + "self_attn.q_proj.weight", [heads * headSize, width]),
                     (p + "self_attn.k_proj.weight", [kvHeads * headSize, width]),
                     (p + "self_attn.v_proj.weight", [kvHeads * headSize, width]),
                     (p + "self_attn.o_proj.weight", [width, heads * headSize]),
                     (p + "block_sparse_moe.router.layer.weight", [experts, width]),
                     (p + "block_sparse_moe.input_linear.weight", [experts, 2 * expertWidth, width]),
                     (p + "block_sparse_moe.output_linear.weight", [experts, width, expertWidth])]
        }
        return list
    }

    /// Bytes one decode step reads: every dense weight, k of the E experts, the head.
    var activeBytes: Int {
        let attention = (2 * heads * headSize * width + 2 * kvHeads * headSize * width)
        let perLayer = attention + experts * width + k * 3 * expertWidth * width + 2 * width
        return 2 * (layers * perLayer + vocabulary * width + width)
    }

    var config: String {
        """
        {"model_type": "granitemoe", "vocab_size": \(vocabulary), "hidden_size": \(width), "num_hidden_layers": \(layers),
         "num_attention_heads": \(heads), "num_key_value_heads": \(kvHeads), "intermediate_size": \(expertWidth),
         "num_local_experts": \(experts), "num_experts_per_tok": \(k), "rms_norm_eps": 1e-6, "rope_theta": 10000,
         "tie_word_embeddings": true, "embedding_multiplier": 12.0, "residual_multiplier": 0.22,
         "attention_multiplier": 0.015625, "logits_scaling": 6.0, "max_position_embeddings": 4096}
        """
    }
}

/// Writes the random BF16 checkpoint; returns its size in bytes.
func writeRandomBF16Checkpoint(_ shape: PretrainedBenchShape, to directory: URL) throws -> Int {
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    try shape.config.write(to: directory.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
    var entries: [String] = [], offset = 0
    for (name, dims) in shape.tensors {
        let bytes = 2 * dims.reduce(1, *)
        entries.append("\"\(name)\":{\"dtype\":\"BF16\",\"shape\":[\(dims.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}")
        offset += bytes
    }
    var header = Array("{\(entries.joined(separator: ","))}".utf8)
    while header.count % 8 != 0 { header.append(0x20) }
    let url = directory.appendingPathComponent("model.safetensors")
    _ = FileManager.default.createFile(atPath: url.path, contents: nil)
    let handle = try FileHandle(forWritingTo: url)
    defer { try? handle.close() }
    var prefix = Data(count: 8)
    prefix.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(header.count).littleEndian, as: UInt64.self) }
    try handle.write(contentsOf: prefix + Data(header))
    var rng = Xoshiro256(seed: 7)
    for (name, dims) in shape.tensors {
        let count = dims.reduce(1, *)
        let isNorm = name.hasSuffix("norm.weight")
        var written = 0
        while written < count {
            let n = min(1 << 22, count - written)
            var chunk = [UInt16](repeating: 0, count: n)
            for i in 0..<n {
                // Norm gains 1; other weights uniform in ±0.04 (std ≈ 0.023), as a BF16 bit pattern.
                let v: Float = isNorm ? 1 : (rng.uniform() * 2 - 1) * 0.04
                chunk[i] = UInt16(truncatingIfNeeded: v.bitPattern >> 16)
            }
            try handle.write(contentsOf: chunk.withUnsafeBytes { Data($0) })
            written += n
        }
    }
    return 8 + header.count + offset
}

/// Resident set size of this process, from /proc/self/status (nil where there is none).
func residentBytes() -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
    return kb * 1024
}

/// Read bandwidth in bytes/s: every thread sums its share of a 256 MB buffer; best of 5.
func measureBandwidth() -> Double {
    let count = 64 << 20   // Floats: 256 MB
    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
    defer { buffer.deallocate() }
    for i in 0..<count { buffer[i] = Float(i & 7) }
    let threads = Parallel.threads
    var best = 0.0
    var sink: Float = 0
    for _ in 0..<5 {
        var partial = [Float](repeating: 0, count: threads)
        let t0 = now()
        partial.withUnsafeMutableBufferPointer { out in
            Parallel.forEach(threads) { t in
                let start = t * count / threads, end = (t + 1) * count / threads
                var acc = SIMD16<Float>(repeating: 0)
                var i = start
                while i + 16 <= end {
                    acc += UnsafeRawPointer(buffer + i).loadUnaligned(as: SIMD16<Float>.self)
                    i += 16
                }
                out[t] = acc.sum()
            }
        }
        best = max(best, Double(4 * count) / (now() - t0))
        sink += partial.reduce(0, +)
    }
    if sink == -1 { print(sink) }   // keep the sums alive
    return best
}

func runPretrainedBench(json: Bool) throws {
    let shape = PretrainedBenchShape()
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("moe-bench-granite-\(getpid())")
    defer { try? FileManager.default.removeItem(at: directory) }
    let bandwidth = measureBandwidth()
    let fileBytes = try writeRandomBF16Checkpoint(shape, to: directory)
    let before = residentBytes() ?? 0
    let model = try PretrainedModel(directory: directory)
    var rng = Xoshiro256(seed: 1)
    let prompt = (0..<128).map { _ in rng.below(shape.vocabulary) }
    let t0 = now()
    var logits = try model.forward(prompt, lastOnly: true).logits
    let prefill = Double(prompt.count) / (now() - t0)
    let steps = 32
    var sampler = TokenSampler(SamplingSettings())
    let t1 = now()
    for _ in 0..<steps { logits = try model.forward([sampler.next(logits)], lastOnly: true).logits }
    let decode = Double(steps) / (now() - t1)
    let resident = (residentBytes() ?? 0) - before
    let bound = bandwidth / Double(shape.activeBytes)
    if json {
        print("{\"pretrained_decode\": {\"model\": \"granite-3.1-1b-a400m dimensions, random BF16\", \"threads\": \(Parallel.threads), "
              + "\"checkpoint_bytes\": \(fileBytes), \"active_bytes_per_token\": \(shape.activeBytes), "
              + "\"bandwidth_gb_s\": \(bandwidth / 1e9), \"prefill_tokens_s\": \(prefill), \"decode_tokens_s\": \(decode), "
              + "\"decode_bound_tokens_s\": \(bound), \"resident_bytes\": \(resident)}}")
    } else {
        print("Pretrained MoE at granite-3.1-1b-a400m's dimensions, random BF16 weights, \(Parallel.threads) threads")
        print(String(format: "  checkpoint            %.2f GB (BF16, memory-mapped)", Double(fileBytes) / 1e9))
        print(String(format: "  active per token      %.2f GB (attention, router, 8 of 32 experts, head)", Double(shape.activeBytes) / 1e9))
        print(String(format: "  memory bandwidth      %.1f GB/s (read, best of 5)", bandwidth / 1e9))
        print(String(format: "  prefill               %.1f tokens/s (128-token prompt)", prefill))
        print(String(format: "  decode                %.2f tokens/s (%d steps)", decode, steps))
        print(String(format: "  decode bound          %.2f tokens/s (bandwidth / active bytes): decode at %.0f%% of it", bound, 100 * decode / bound))
        print(String(format: "  resident after run    %.2f GB above the start (%.2f× the checkpoint)", Double(resident) / 1e9, Double(resident) / Double(fileBytes)))
    }
}
