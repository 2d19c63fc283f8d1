// moe-bench: how fast is the matmul, in GFLOP/s, on the shapes that matter?
//
//     swift run -c release moe-bench           # a table
//     swift run -c release moe-bench --json    # the same figures as JSON
//
// For each shape M×K×N (C[M,N] = A[M,K]·B[K,N]) and each product backprop
// needs (A·B, A·Bᵀ, Aᵀ·B), it times the tiled kernel on one thread and on all
// cores, and the naive triple loop on one thread, and prints the median of
// many repetitions: the machine is shared and noisy, and the median ignores
// the runs that another process interrupted. GFLOP/s = 2·M·N·K / seconds / 1e9.
// Then a whole MNIST training step against the FMA peak and what entering a
// parallel region costs (Peak.swift), the share of the step spent routing
// (RoutingShare.swift), and with --only pretrained a pretrained-size decode
// (PretrainedDecode.swift).
import Foundation
import MoE

struct Shape { let m: Int, k: Int, n: Int, note: String }

// The MNIST MoE's products (batch 64, 2 of 8 experts → ~16 tokens per expert),
// the GPT's, then two square sizes to compare with published figures.
let shapes = [
    Shape(m: 64, k: 784, n: 256, note: "input layer"),
    Shape(m: 64, k: 256, n: 8, note: "router"),
    Shape(m: 16, k: 256, n: 128, note: "expert up"),
    Shape(m: 16, k: 128, n: 256, note: "expert down"),
    Shape(m: 64, k: 256, n: 10, note: "output layer"),
    // Their weight gradients, dW = dYᵀ·X (Aᵀ·B in the step): the batch, or an
    // expert's ~16 tokens, is the inner dimension.
    Shape(m: 256, k: 64, n: 784, note: "input weight grad"),
    Shape(m: 8, k: 64, n: 256, note: "router weight grad"),
    Shape(m: 128, k: 16, n: 256, note: "expert up w. grad"),
    Shape(m: 256, k: 16, n: 128, note: "expert down w. grad"),
    Shape(m: 10, k: 64, n: 256, note: "output weight grad"),
    // gpt-moe's baseline: 2,048 tokens (32 windows of 64) of width 64 through
    // the 256-wide MLP (forward, and the input gradient), a weight gradient
    // summed over the tokens, and one of 8 experts with its ~256 tokens.
    Shape(m: 2048, k: 64, n: 256, note: "GPT MLP"),
    Shape(m: 2048, k: 256, n: 64, note: "GPT MLP"),
    Shape(m: 256, k: 2048, n: 64, note: "GPT weight grad"),
    Shape(m: 256, k: 64, n: 256, note: "GPT expert"),
    Shape(m: 256, k: 256, n: 256, note: "square"),
    Shape(m: 512, k: 512, n: 512, note: "square"),
]
let variants: [(name: String, transposeA: Bool, transposeB: Bool)] = [
    ("AB", false, false), ("ABt", false, true), ("AtB", true, false),
]

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.contains("--help") || arguments.contains("-h") {
    print("""
    usage: moe-bench [--json] [--only matmul|step|pretrained]

    Times the tiled SIMD matmul (1 thread and all \(ProcessInfo.processInfo.activeProcessorCount) cores) and the
    naive triple loop on the MNIST MoE's and the GPT's shapes, for A·B, A·Bᵀ and Aᵀ·B, and prints
    the median GFLOP/s. Build with -c release for the published figures.
      --json          print {"matmul": [{"m", "k", "n", "variant", "threads", "gflops"}, …],
                             "training_step": [{"model", "threads", "ms_per_step", "adam_ms_per_step", "gflops", "share_of_peak", …}],
                             "routing_share": [{"threads", "share", "share_excluding_gate", "phases_ms", …}],
                             "parallel_region": [{"threads", "unit_us", "units_in_one_region_us", "region_cost_us", …}]}
      --only SECTION  run only "matmul" or "step" (the training step of the MNIST models,
                      the share of the MoE step spent routing: RoutingShare.swift, and
                      what entering a parallel region costs: Peak.swift)
                      or "pretrained" (not run by default: writes a 2.7 GB random BF16
                      checkpoint at granite-3.1-1b-a400m's dimensions to the temporary
                      folder, times prefill and decode, prints resident memory and the
                      memory-bandwidth decode bound: PretrainedDecode.swift)
    """)
    exit(0)
}
// --only matmul | --only step: one section (e.g. to profile a training step).
// A usage error is one line, with a guess for a near miss (ArgumentReader.swift).
var only: String? = nil
var json = false
do {
    var reader = ArgumentReader(arguments)
    while let word = reader.next() {
        switch word {
        case "--json": json = true
        case "--only":
            let section = try reader.value(word)
            guard ["matmul", "step", "pretrained"].contains(section) else {
                throw UsageError("--only must be matmul, step or pretrained, got '\(section)'")
            }
            only = section
        default: throw UsageError.unknownOption(word, known: ["--json", "--only", "--help"])
        }
    }
} catch {
    FileHandle.standardError.write(Data((UsageError.line(program: "moe-bench", error) + "\n").utf8))
    exit(2)
}
let allCores = ProcessInfo.processInfo.activeProcessorCount
if only == "pretrained" {
    do { try runPretrainedBench(json: json) } catch {
        FileHandle.standardError.write("moe-bench: \(error)\n".data(using: .utf8)!)
        exit(1)
    }
    exit(0)
}

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

/// Median seconds of one call of `body`, timing batches of calls that last at
/// least ~2 ms each so the clock's resolution does not matter.
func medianSeconds(minBatches: Int = 15, _ body: () -> Void) -> Double {
    body()  // warm-up: page in the buffers, wake the threads
    var calls = 1
    while true {
        let t0 = now()
        for _ in 0..<calls { body() }
        if now() - t0 > 0.002 || calls > 1 << 20 { break }
        calls *= 2
    }
    var samples: [Double] = []
    for _ in 0..<minBatches {
        let t0 = now()
        for _ in 0..<calls { body() }
        samples.append((now() - t0) / Double(calls))
    }
    samples.sort()
    return samples[samples.count / 2]
}

struct Row { let shape: Shape; let variant: String; let threads: String; let gflops: Double }
var rows: [Row] = []
var rng = Xoshiro256(seed: 42)
for s in only == "step" ? [] : shapes {
    for v in variants {
        let a = Tensor.uniform(v.transposeA ? [s.k, s.m] : [s.m, s.k], low: -1, high: 1, rng: &rng)
        let b = Tensor.uniform(v.transposeB ? [s.n, s.k] : [s.k, s.n], low: -1, high: 1, rng: &rng)
        let flops = 2.0 * Double(s.m * s.n * s.k)
        for threads in Set([1, allCores]).sorted() {
            let sec = medianSeconds { _ = matmul(a, b, transposeA: v.transposeA, transposeB: v.transposeB, threads: threads) }
            rows.append(Row(shape: s, variant: v.name, threads: String(threads), gflops: flops / sec / 1e9))
        }
        // The naive loop is slow: a few batches are enough for its median.
        let sec = medianSeconds(minBatches: 3) { _ = naiveMatmul(a, b, transposeA: v.transposeA, transposeB: v.transposeB) }
        rows.append(Row(shape: s, variant: v.name, threads: "naive", gflops: flops / sec / 1e9))
    }
}

// MARK: - A whole training step of the MNIST models

/// Median seconds of one training step (forward, backward, Adam) on a random
/// batch of 64 "images", with the routing of whatever the model has learned so far.
func stepSeconds(_ model: Classifier, threads: Int) -> Double {
    Parallel.threads = threads
    defer { Parallel.threads = allCores }
    var rng = Xoshiro256(seed: 7)
    let x = Tensor.uniform([64, 784], low: 0, high: 1, rng: &rng)
    let y = (0..<64).map { $0 % 10 }
    let adam = Adam(parameters: model.parameters)
    return medianSeconds(minBatches: 21) {
        model.zeroGrad()
        let ce = SoftmaxCrossEntropy.compute(logits: model.forward(x), labels: y)
        model.backward(ce.gradient)
        adam.step()
    }
}

/// Median seconds of Adam's update alone, on the same model and threads: the
/// part of the step that is neither matmul nor routing (part 2, §18).
func adamSeconds(_ model: Classifier, threads: Int) -> Double {
    Parallel.threads = threads
    defer { Parallel.threads = allCores }
    let adam = Adam(parameters: model.parameters)
    return medianSeconds(minBatches: 21) { adam.step() }
}
struct StepRow {
    let model: String, threads: Int, ms: Double, adamMs: Double
    let flops: Double, peak: Double   // the step's matmul operations; the FMA peak on these threads (Peak.swift)
    var gflops: Double { flops / (ms / 1e3) / 1e9 }
    var ofPeak: Double { gflops / peak }
}
var stepRows: [StepRow] = []
for threads in only == "matmul" ? [] : Set([1, allCores]).sorted() {
    var rng = Xoshiro256(seed: 0)
    let peak = fmaPeakGFLOPS(threads: threads)
    for model in [MoEClassifier(rng: &rng), DenseClassifier(rng: &rng)] as [Classifier] {
        stepRows.append(StepRow(model: model.name, threads: threads, ms: 1e3 * stepSeconds(model, threads: threads),
                                adamMs: 1e3 * adamSeconds(model, threads: threads),
                                flops: trainingStepFLOPs(model, batch: 64), peak: peak))
    }
}
// What entering a parallel region costs, for units of work the size of a
// step's small and large products (Peak.swift).
let regionRows = only == "matmul" || allCores < 2 ? [] : [20.0, 80.0, 320.0].map { measureRegion(threads: allCores, unitMicroseconds: $0) }
// The share of the MoE step spent routing, phase by phase (RoutingShare.swift).
let routingRows = (only == "matmul" ? [] : Set([1, allCores]).sorted()).map { measureRoutingShare(threads: $0) }
// 5,000 images / 64 = 79 steps per epoch, 30 epochs.
let stepsPerRun = 79.0 * 30

if json {
    let entries = rows.map { r -> [String: Any] in
        ["m": r.shape.m, "k": r.shape.k, "n": r.shape.n, "variant": r.variant,
         "threads": Int(r.threads) ?? 1, "kernel": r.threads == "naive" ? "naive" : "tiled",
         "gflops": (r.gflops * 100).rounded() / 100]
    }
    let steps = stepRows.map { r -> [String: Any] in
        ["model": r.model, "threads": r.threads, "ms_per_step": (r.ms * 1000).rounded() / 1000,
         "adam_ms_per_step": (r.adamMs * 1000).rounded() / 1000,
         "mflop_per_step": (r.flops / 1e4).rounded() / 100, "gflops": (r.gflops * 100).rounded() / 100,
         "fma_peak_gflops": (r.peak * 10).rounded() / 10, "share_of_peak": (r.ofPeak * 1e4).rounded() / 1e4,
         "estimated_train_seconds_30_epochs": (r.ms * stepsPerRun / 10).rounded() / 100]
    }
    let routingShare = routingRows.map { r -> [String: Any] in
        ["threads": r.threads, "ms_per_step": (r.stepMs * 1000).rounded() / 1000,
         "share": (r.share * 1e4).rounded() / 1e4, "share_excluding_gate": (r.shareWithoutGate * 1e4).rounded() / 1e4,
         "phases_ms": Dictionary(uniqueKeysWithValues: RoutingPhase.allCases.map { ($0.name, (r.phaseMs[$0]! * 1e4).rounded() / 1e4) })]
    }
    let regions = regionRows.map { r -> [String: Any] in
        ["threads": r.threads, "unit_us": (r.unitSeconds * 1e7).rounded() / 10,
         "units_one_after_another_us": (r.serialSeconds * 1e7).rounded() / 10,
         "units_in_one_region_us": (r.regionSeconds * 1e7).rounded() / 10,
         "region_cost_us": ((r.regionSeconds - r.unitSeconds) * 1e7).rounded() / 10]
    }
    let data = try! JSONSerialization.data(withJSONObject: ["matmul": entries, "training_step": steps,
                                                            "routing_share": routingShare, "parallel_region": regions],
                                           options: [.prettyPrinted, .sortedKeys])
    print(String(decoding: data, as: UTF8.self))
} else {
    if only != "step" {
        print("matmul GFLOP/s, median (\(allCores) cores available)")
        let header = ["M×K×N", "", "variant", "tiled 1 thread", "tiled \(allCores) threads", "naive"]
        var table: [[String]] = [header]
        for s in shapes {
            for v in variants {
                let r = rows.filter { $0.shape.m == s.m && $0.shape.k == s.k && $0.shape.n == s.n && $0.variant == v.name }
                func g(_ t: String) -> String { r.first { $0.threads == t }.map { String(format: "%.1f", $0.gflops) } ?? "-" }
                table.append(["\(s.m)×\(s.k)×\(s.n)", s.note, v.name, g("1"), g(String(allCores)), g("naive")])
            }
        }
        let widths = (0..<header.count).map { c in table.map { $0[c].count }.max()! }
        for (i, line) in table.enumerated() {
            print(line.enumerated().map { c, cell in
                c < 3 ? cell.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                      : String(repeating: " ", count: widths[c] - cell.count) + cell
            }.joined(separator: "  "))
            if i == 0 { print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")) }
        }
    }
    if only != "matmul" {
        print("\ntraining step, batch 64 (forward + backward + Adam), median; % of the FMA peak measured")
        print("on the same threads (Peak.swift); Adam's update timed alone; 30 epochs = 79 × 30 steps of 5,000 images")
        print("  model  threads   ms/step  of which Adam  MFLOP  GFLOP/s  peak GFLOP/s  of peak  30 epochs")
        for r in stepRows {
            let name = r.model.padding(toLength: 5, withPad: " ", startingAt: 0)
            print("  " + name + String(format: "  %7d  %8.3f  %13.3f  %5.1f  %7.1f  %12.1f  %6.1f%%  %7.2f s",
                         r.threads, r.ms, r.adamMs, r.flops / 1e6, r.gflops, r.peak, 100 * r.ofPeak, r.ms * stepsPerRun / 1000))
        }
        print("\nshare of the MoE training step spent routing (gate, router, dispatch, combine; RoutingShare.swift),")
        print("median of 200 steps, ms per phase")
        let columns = ["threads", "step"] + RoutingPhase.allCases.map(\.name) + ["routing", "without gate"]
        func cells(_ values: [String]) -> String {
            zip(columns, values).map { String(repeating: " ", count: max(0, max($0.count, 7) - $1.count)) + $1 }
                .joined(separator: "  ")
        }
        print("  " + cells(columns))
        for r in routingRows {
            let values = [String(r.threads), String(format: "%.3f", r.stepMs)]
                + RoutingPhase.allCases.map { String(format: "%.3f", r.phaseMs[$0]!) }
                + [String(format: "%.1f%%", 100 * r.share), String(format: "%.1f%%", 100 * r.shareWithoutGate)]
            print("  " + cells(values) +
                  (r.share < 0.15 ? "" : "   (above the 15% goal)"))
        }
        if !regionRows.isEmpty {
            print("\nwhat a parallel region costs (Peak.swift): \(allCores) units of FMA work, one after another on one")
            print("thread, or one per thread in one Parallel.forEach; medians of 201 back-to-back regions, µs")
            print("  unit  one after another  in one region  region cost (beyond one unit)")
            for r in regionRows {
                print(String(format: "  %4.0f  %16.0f  %13.0f  %29.0f", 1e6 * r.unitSeconds, 1e6 * r.serialSeconds,
                             1e6 * r.regionSeconds, 1e6 * (r.regionSeconds - r.unitSeconds)))
            }
        }
    }
}
