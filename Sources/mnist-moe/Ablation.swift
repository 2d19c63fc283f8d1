// mnist-moe ablate: the routing and balancing methods side by side.
//
//     swift run mnist-moe ablate                 # every preset, 30 epochs each
//     swift run mnist-moe ablate --epochs 5      # a quicker look
//
// Each configuration trains the same MoE classifier from the same seed on the
// same data in the same order; only the routing or balancing differs. One row
// per configuration: test accuracy, training seconds, the load-balancing
// numbers measured on the test set, and the share of slots capacity dropped.
// Notebooks/part3-mnist.md, §6 reads a run.
import Foundation
import MoE

/// The preset list: the walkthrough's default first, then one change at a time.
func ablationPresets() -> [(name: String, setup: RoutingSetup)] {
    let base = RoutingSetup()
    func variant(_ change: (inout RoutingSetup) -> Void) -> RoutingSetup {
        var s = base
        change(&s)
        return s
    }
    return [
        ("top-2 + Switch loss (default)", base),
        ("top-2, no balancing", variant { $0.balancing = [] }),
        ("top-2, no gate noise", variant { $0.gateNoise = .none }),
        ("top-2, gate with a bias", variant { $0.gateBias = true }),
        ("top-2 → softmax over chosen", variant { $0.order = .topKThenSoftmax }),
        ("top-2, not renormalised", variant { $0.renormalize = false }),
        ("Switch top-1", variant { $0.router = "switch" }),
        ("top-2 + CV² importance/load", variant { $0.balancing = ["cv2"] }),
        ("top-2 + Switch + z-loss", variant { $0.balancing = ["switch", "z"] }),
        ("top-2 + aux-loss-free bias", variant { $0.balancing = ["bias"] }),
        ("noisy top-2", variant { $0.router = "noisy" }),
        ("expert choice", variant { $0.router = "expert-choice"; $0.balancing = [] }),
        ("DeepSeek-V3, 4 groups, bias", variant {
            $0.router = "deepseek"; $0.groups = 4; $0.topGroups = 2; $0.balancing = ["bias"]
        }),
        ("top-2, capacity 1.0 token order", variant { $0.capacityFactor = 1.0; $0.overflow = .tokenOrder }),
        ("top-2, capacity 1.0 by score", variant { $0.capacityFactor = 1.0; $0.overflow = .score }),
        ("top-2, capacity 1.0 choices first", variant { $0.capacityFactor = 1.0; $0.overflow = .choiceOrder }),
        ("top-1 + 1 shared expert", variant { $0.router = "switch"; $0.sharedExperts = 1 }),
        ("top-2, temperature 2 → 0.5 cosine", variant {
            $0.temperature = TemperatureSchedule(start: 2, end: 0.5, shape: .cosine)
        }),
        ("top-2, expert dropout 0.1", variant { $0.expertDropout = 0.1 }),
    ]
}

/// One configuration's results.
struct AblationResult {
    let name: String
    let setup: RoutingSetup
    let paramsActive: Int
    let testAccuracy: Double
    let trainSeconds: Double
    let finalAux: Double          // the first balancing loss, training, last epoch (0 if none)
    let switchMeasured: Double    // E·Σ fᵢPᵢ on the test set, for every configuration
    let usage: [Double]
    let routerEntropy: Double
    let loadCV: Double
    let droppedShare: Double

    var topTwoShare: Double { usage.sorted(by: >).prefix(2).reduce(0, +) }
}

func runAblation() {
    let presets = ablationPresets()
    print("MNIST: \(trainSet.count) training images, \(testSet.count) test images from \(dataDirectory.path)")
    print("Ablation: \(presets.count) routing configurations of the MoE, \(counted(options.epochs, "epoch")) each, " +
          "batch \(options.batchSize), Adam lr \(options.learningRate), seed \(options.seed), \(options.threads) thread(s)\n")
    var results: [AblationResult] = []
    for (index, preset) in presets.enumerated() {
        var setup = preset.setup
        setup.k = min(setup.k, options.experts)
        if setup.router == "deepseek" && options.experts % setup.groups != 0 { setup.groups = 1; setup.topGroups = 1 }
        let model = makeMoE(setup)
        let trainer = Trainer(model: model, config: config)
        let batches = (trainSet.count + config.batchSize - 1) / config.batchSize
        let bar = ProgressBar(title: String(format: "%2d/%d %@", index + 1, presets.count, preset.name),
                              total: max(1, batches * config.epochs))
        bar.reportsTenths = false
        while trainer.epochsDone < config.epochs {
            let before = trainer.epochsDone * batches
            _ = trainer.trainEpoch(on: trainSet) { done, _, loss, aux in
                bar.update(before + done, status: String(format: "loss %.4f  aux %.3f", loss, aux))
            }
        }
        let accuracy = Trainer.accuracy(of: model, on: testSet)
        let routing = Trainer.routingReport(of: model, on: testSet)
        let stats = routing.statistics
        let f = stats.tokenCounts.map { Double($0) / Double(max(stats.tokens, 1)) }
        let switchValue = Double(options.experts) * zip(f, stats.meanProbabilities).reduce(0) { $0 + $1.0 * $1.1 }
        let result = AblationResult(
            name: preset.name, setup: setup, paramsActive: model.activeParameterCount, testAccuracy: accuracy,
            trainSeconds: trainer.history.reduce(0) { $0 + $1.seconds },
            finalAux: trainer.history.last?.auxLoss ?? 0, switchMeasured: switchValue,
            usage: stats.usage, routerEntropy: stats.routerEntropy, loadCV: stats.loadCoefficientOfVariation,
            droppedShare: stats.droppedShare)
        bar.finish(status: String(format: "test %.2f%%  %.2fs  top-2 share %.1f%%  dropped %.1f%%",
                                  100 * accuracy, result.trainSeconds, 100 * result.topTwoShare, 100 * result.droppedShare))
        results.append(result)
    }

    let lnE = log(Double(options.experts))
    var table = TextTable(headers: ["Configuration", "Test acc", "Train s", "Aux (train)", "Switch (test)",
                                    "Max share", "Min share", "Top-2 share", "Entropy", "Load CV", "Dropped"])
    for r in results {
        table.addRow([r.name, RunReport.pct(r.testAccuracy), String(format: "%.2f", r.trainSeconds),
                      r.setup.balancing.isEmpty ? "-" : String(format: "%.3f", r.finalAux),
                      String(format: "%.3f", r.switchMeasured),
                      RunReport.pct(r.usage.max() ?? 0), RunReport.pct(r.usage.min() ?? 0), RunReport.pct(r.topTwoShare),
                      String(format: "%.3f", r.routerEntropy), String(format: "%.3f", r.loadCV), RunReport.pct(r.droppedShare)])
    }
    print("\nRouting ablation (test set; \(options.experts) experts)")
    print(table.render())
    print(String(format: """
        Reading it: shares are of routed slots, uniform = %.1f%%; the Switch loss E·Σ fᵢPᵢ is measured on the
        test set for every row: %d at perfect balance (k = 2; 1 for top-1 routing), %d at total collapse.
        Entropy is the router's per-token entropy in nats, at most ln %d = %.3f. Load CV 0 = even load.
        """, 100 / Double(options.experts), 2, options.experts, options.experts, lnE))

    let summary: [String: Any] = [
        "config": options.json,
        "configurations": results.map { r -> [String: Any] in
            ["name": r.name, "routing": r.setup.json, "params_active": r.paramsActive,
             "test_accuracy": r.testAccuracy, "train_seconds": r.trainSeconds, "final_aux_loss": r.finalAux,
             "switch_loss_test": r.switchMeasured, "expert_usage": r.usage, "max_share": r.usage.max() ?? 0,
             "min_share": r.usage.min() ?? 0, "top2_share": r.topTwoShare, "router_entropy": r.routerEntropy,
             "router_entropy_max": lnE, "load_cv": r.loadCV, "dropped_share": r.droppedShare]
        },
        "machine": ["cores": ProcessInfo.processInfo.activeProcessorCount,
                    "os": ProcessInfo.processInfo.operatingSystemVersionString],
    ]
    do {
        let json = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(json, to: outDirectory.appendingPathComponent("summary.json"))
        // Accuracy on its own axis, from the whole percent below the worst row
        // to 100%: on 0–100% the rows' differences (a point or two) would not
        // show. The load shares keep the full 0–100% axis.
        let accuracies = results.map(\.testAccuracy).filter(\.isFinite)
        let low = min(0.9, ((accuracies.min() ?? 0.9) * 100 - 1).rounded(.down) / 100)
        let chart = RowChart(title: "Routing ablation (test set, \(options.experts) experts)",
                             rows: results.map(\.name),
                             panels: [
                                .init(title: "test accuracy", range: max(0, low)...1,
                                      series: [("test accuracy", results.map(\.testAccuracy))],
                                      format: { String(format: "%.2f%%", $0 * 100) }),
                                .init(title: "load of the experts", range: 0...1,
                                      series: [("two busiest experts' share", results.map(\.topTwoShare)),
                                               ("dropped slots", results.map(\.droppedShare))],
                                      referenceLine: (2 / Double(options.experts), "even top-2 share")),
                             ])
        try AtomicFile.write(Data(chart.svg().utf8), to: outDirectory.appendingPathComponent("ablation.svg"))
    } catch {
        fail("\(error)")
    }
    print("Wrote \(outDirectory.path)/: summary.json, ablation.svg")
}
