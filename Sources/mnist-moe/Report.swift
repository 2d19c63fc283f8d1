// The tables of Part 3, filled in from this run, and the files of --out:
// summary.json, learning_curves.svg, specialization.svg, expert_usage.svg.
// The walkthrough's own figures stand beside ours where it reports one, so a
// reader sees at a glance what reproduced and what did not.
//
// Read beside Notebooks/part3-mnist.md, §2.
import Foundation
import MoE

struct RunReport {
    let options: Options
    let runs: [ModelRun]
    /// The seed these runs used (one of --seeds, or --seed).
    var seed: UInt64? = nil

    var moe: ModelRun? { runs.first { $0.model is MoEClassifier } }
    var dense: ModelRun? { runs.first { $0.model is DenseClassifier } }

    /// The walkthrough's numbers (Part 3), for the "walkthrough" columns.
    enum Walkthrough {
        static let moeTest = 0.9514, denseTest = 0.9536
        static let moeTrain = 0.9986, denseTrain = 1.0
        static let moeLoss = 0.2147, denseLoss = 0.0001
        static let moeAux = 2.10
        /// Part 3's learning curve, four epochs, (MoE, dense). Training
        /// accuracies, by every sign (the epoch-30 pair equals the final ones).
        static let curve: [(epoch: Int, moe: Double, dense: Double)] = [
            (1, 0.6398, 0.7568), (5, 0.9566, 0.9684), (15, 0.9960, 0.9980), (30, 0.9986, 1.0)]
    }

    /// True when this run is the walkthrough's setup, so its numbers belong beside ours.
    var isWalkthroughSetup: Bool {
        options.epochs == 30 && options.trainSize == 5000 && options.experts == 8 && options.topK == 2
            && options.routing == RoutingSetup() && options.variant == .walkthrough
            && options.hidden == 256 && options.expertHidden == 128 && options.auxWeight == 0.1 && options.batchSize == 64
    }

    /// One line per seed of a --seeds run.
    func seedLine() -> String {
        "seed \(seed ?? options.seed): " + runs.map { r in
            "\(r.model.name) test \(Self.pct(r.testAccuracy)), train \(Self.pct(r.trainer.history.last?.trainAccuracy ?? .nan))"
        }.joined(separator: "; ")
    }

    static func pct(_ x: Double) -> String { x.isNaN ? "-" : String(format: "%.2f%%", 100 * x) }
    /// A number in `format`, or "-" when there is none (no epoch was trained: --epochs 0).
    static func num(_ x: Double, _ format: String = "%.4f") -> String { x.isFinite ? String(format: format, x) : "-" }
    static func int(_ n: Int) -> String {
        let s = String(n)
        var out = ""
        for (i, c) in s.reversed().enumerated() { if i > 0 && i % 3 == 0 { out.append(",") }; out.append(c) }
        return String(out.reversed())
    }

    // MARK: Tables

    func tables() -> String {
        var text = ""
        func section(_ title: String, _ table: TextTable) { text += "\n\(title)\n\(table.render())\n" }
        let w = isWalkthroughSetup   // the walkthrough's column only makes sense for its own setup

        var setup = TextTable(headers: ["Property", "MoE", "Dense MLP"])
        setup.addRow(["Total parameters", moe.map { Self.int($0.model.parameterCount) } ?? "-",
                      dense.map { Self.int($0.model.parameterCount) } ?? "-"])
        setup.addRow(["Active parameters", moe.map { Self.int($0.model.activeParameterCount) } ?? "-",
                      dense.map { Self.int($0.model.activeParameterCount) } ?? "-"])
        setup.addRow(["Experts", "\(options.experts) (top-\(options.topK) active)", "-"])
        setup.addRow(["Hidden dim", "\(options.hidden)", "\(options.hidden)"])
        section("Experimental setup", setup)

        var accuracy = TextTable(headers: w ? ["Metric", "MoE", "Dense MLP", "walkthrough MoE", "walkthrough dense"]
                                            : ["Metric", "MoE", "Dense MLP"])
        func row(_ name: String, _ f: (ModelRun) -> String, _ wm: String, _ wd: String) {
            accuracy.addRow([name, moe.map(f) ?? "-", dense.map(f) ?? "-"] + (w ? [wm, wd] : []))
        }
        row("Final training accuracy", { Self.pct($0.trainer.history.last?.trainAccuracy ?? .nan) },
            Self.pct(Walkthrough.moeTrain), Self.pct(Walkthrough.denseTrain))
        row("Test accuracy", { Self.pct($0.testAccuracy) }, Self.pct(Walkthrough.moeTest), Self.pct(Walkthrough.denseTest))
        row("Final training loss", { Self.num(self.finalLoss($0)) },
            String(format: "%.4f", Walkthrough.moeLoss), String(format: "%.4f", Walkthrough.denseLoss))
        row("  classification (CE)", { Self.num($0.trainer.history.last?.trainLoss ?? .nan) }, "0.004", "-")
        row("  α·aux", { Self.num(self.weightedAux($0)) }, "0.21", "-")
        row("Aux loss (unweighted)", { $0.model is MoEClassifier ? Self.num($0.trainer.history.last?.auxLoss ?? .nan, "%.3f") : "-" },
            String(format: "%.2f", Walkthrough.moeAux), "-")
        row("Training time (steps only)", { String(format: "%.2f s", $0.trainSeconds) }, "-", "-")
        section("Accuracy comparison", accuracy)

        // The learning curve: training accuracy (as the epoch went) and test
        // accuracy (after it), at the walkthrough's four epochs and the last.
        let history = runs.map { $0.trainer.history }
        let shown = Array(Set(Walkthrough.curve.map(\.epoch).filter { $0 <= options.epochs } + [options.epochs]))
            .sorted().filter { $0 >= 1 }
        var headers = ["Epoch"]
        for r in runs { let l = r.model is MoEClassifier ? "MoE" : "Dense"; headers += ["\(l) train", "\(l) test"] }
        if w { headers += ["walkthrough MoE", "walkthrough dense"] }
        var curve = TextTable(headers: headers)
        for epoch in shown {
            var row = ["\(epoch)"]
            for h in history {
                let e = h.first { $0.epoch == epoch }
                row += [Self.pct(e?.trainAccuracy ?? .nan), Self.pct(e?.testAccuracy ?? .nan)]
            }
            if w {
                let ref = Walkthrough.curve.first { $0.epoch == epoch }
                row += [ref.map { Self.pct($0.moe) } ?? "-", ref.map { Self.pct($0.dense) } ?? "-"]
            }
            curve.addRow(row)
        }
        section("Learning curve (train = running accuracy during the epoch, test = after it; the walkthrough's are training accuracies)", curve)

        if let m = moe {
            var efficiency = TextTable(headers: ["Metric", "Value"])
            let total = m.model.parameterCount, active = m.model.activeParameterCount
            efficiency.addRow(["MoE total parameters", Self.int(total)])
            efficiency.addRow(["MoE active parameters per input", Self.int(active)])
            if let d = dense { efficiency.addRow(["Dense baseline parameters", Self.int(d.model.parameterCount)]) }
            efficiency.addRow(["MoE sparsity ratio", String(format: "%.1f%% inactive", 100 * (1 - Double(active) / Double(total)))])
            if let d = dense {
                efficiency.addRow(["MoE capacity multiplier", String(format: "%.2f×", Double(total) / Double(d.model.parameterCount))])
            }
            section("Parameter efficiency", efficiency)
        }

        if let r = moe?.routing {
            var spec = TextTable(headers: ["Digit", "Primary expert", "Secondary expert"])
            for (digit, row) in r.specialization.enumerated() {
                let ranked = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }
                func cell(_ e: Int) -> String { "Expert \(e) (\(Self.pct(row[e])))" }
                spec.addRow(["\(digit)", cell(ranked[0]), ranked.count > 1 ? cell(ranked[1]) : "-"])
            }
            section("Expert specialization (test set, share of each digit's routing slots)", spec)
            // How much the top-1 expert says about the digit, beside chance (Notebooks/part6-specialization.md, §6).
            text += "I(digit; top-1 expert) = \(r.specializationTest().summary), of at most H(digit) = "
                + String(format: "%.3f bits\n", r.topExpertTable.labelEntropyBits)

            var usage = TextTable(headers: ["Expert", "Share of routed slots", "Mean router probability"])
            let u = r.statistics.usage, p = r.statistics.meanProbabilities
            for e in u.indices { usage.addRow(["\(e)", Self.pct(u[e]), String(format: "%.3f", p[e])]) }
            section("Expert usage (test set; uniform = \(Self.pct(1 / Double(u.count))))", usage)
            let lnE = log(Double(options.experts))
            text += String(format: "Router entropy %.3f nats per token (max ln %d = %.3f; normalised %.2f); load entropy %.3f; load CV %.3f\n",
                           r.statistics.routerEntropy, options.experts, lnE, lnE > 0 ? r.statistics.routerEntropy / lnE : 0,
                           r.statistics.loadEntropy, r.statistics.loadCoefficientOfVariation)
            // What the balancing number means for this E and k: its value at
            // perfect balance and at total collapse.
            if let layer = (moe?.model as? MoEClassifier)?.moe {
                if let bias = layer.balancing.first as? AuxLossFreeBalancing {
                    text += "Auxiliary-loss-free bias (not a loss) after \(bias.updates) updates: ["
                        + bias.bias.map { String(format: "%+.3f", $0) }.joined(separator: " ") + "]\n"
                } else if let first = layer.balancing.first {
                    var line = m(moe!).isFinite
                        ? String(format: "Load-balancing loss (%@) %.3f in the last epoch", first.name, m(moe!))
                        : "Load-balancing loss (\(first.name)): no epoch trained"
                    if let ref = first.referenceValues(experts: options.experts, k: options.topK) {
                        line += String(format: " (perfect balance %g, total collapse %g)", ref.balanced, ref.collapsed)
                    }
                    text += line + "\n"
                } else {
                    text += "No load balancing (--balance none or --aux-weight 0 shows the collapse)\n"
                }
                if layer.capacity != nil {
                    text += String(format: "Capacity dropped %.2f%% of the chosen slots on the test set\n",
                                   100 * r.statistics.droppedShare)
                }
            }
        }
        return text
    }

    private func m(_ run: ModelRun) -> Double { run.trainer.history.last?.auxLoss ?? .nan }
    func weightedAux(_ run: ModelRun) -> Double {
        guard let layer = (run.model as? MoEClassifier)?.moe else { return 0 }
        return Double(layer.auxLossWeight) * (run.trainer.history.last?.auxLoss ?? .nan)
    }
    func finalLoss(_ run: ModelRun) -> Double { (run.trainer.history.last?.trainLoss ?? .nan) + weightedAux(run) }

    // MARK: Files

    var plotNames: [String] {
        ["learning_curves.svg", "loss_curves.svg"] + (moe?.routing != nil ? ["specialization.svg", "expert_usage.svg"] : [])
    }

    func summary() -> [String: Any] {
        func num(_ x: Double) -> Any { x.isFinite ? x : NSNull() }
        let models: [[String: Any]] = runs.map { run in
            var entry: [String: Any] = [
                "name": run.model.name,
                "params_total": run.model.parameterCount,
                "params_active": run.model.activeParameterCount,
                "train_seconds": run.trainSeconds,
                "test_accuracy": run.testAccuracy,
                "final_train_accuracy": num(run.trainer.history.last?.trainAccuracy ?? .nan),
                "final_loss": num(finalLoss(run)),
                "final_classification_loss": num(run.trainer.history.last?.trainLoss ?? .nan),
                "final_aux_loss": num(run.model is MoEClassifier ? (run.trainer.history.last?.auxLoss ?? .nan) : 0),
                "epochs": run.trainer.history.map { e -> [String: Any] in
                    ["epoch": e.epoch, "train_loss": e.trainLoss, "aux_loss": e.auxLoss,
                     "train_accuracy": e.trainAccuracy, "test_accuracy": num(e.testAccuracy), "seconds": e.seconds]
                },
            ]
            if let r = run.routing {
                entry["expert_usage"] = r.statistics.usage
                entry["mean_router_probability"] = r.statistics.meanProbabilities
                entry["router_entropy"] = r.statistics.routerEntropy
                entry["load_entropy"] = r.statistics.loadEntropy
                entry["load_cv"] = r.statistics.loadCoefficientOfVariation
                entry["specialization"] = r.specialization
                entry["digit_expert_mutual_information"] = r.specializationTest().json   // top-1 expert; part6, §6
            }
            return entry
        }
        var config = options.json
        if let seed { config["seed"] = seed }
        return ["config": config, "models": models, "machine": Self.machine]
    }

    /// Where the run ran, for summary.json.
    static var machine: [String: Any] {
        ["cores": ProcessInfo.processInfo.activeProcessorCount, "os": ProcessInfo.processInfo.operatingSystemVersionString]
    }

    /// summary.json, pretty-printed with sorted keys, written atomically into `directory`.
    static func writeSummary(_ summary: [String: Any], to directory: URL) throws {
        let json = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(json, to: directory.appendingPathComponent("summary.json"))
    }

    func write(to directory: URL) throws {
        try Self.writeSummary(summary(), to: directory)

        var series: [(name: String, points: [(x: Double, y: Double)])] = []
        for run in runs {
            let label = run.model is MoEClassifier ? "MoE" : "dense"
            series.append(("\(label) train", run.trainer.history.map { (Double($0.epoch), $0.trainAccuracy) }))
            series.append(("\(label) test", run.trainer.history.map { (Double($0.epoch), $0.testAccuracy) }))
        }
        let curves = LineChart(title: "Accuracy per epoch", xLabel: "epoch", yLabel: "accuracy", series: series)
        try AtomicFile.write(Data(curves.svg().utf8), to: directory.appendingPathComponent("learning_curves.svg"))

        // Losses: the task loss of each model and, for the MoE, α·aux, the part
        // that stays at α·k ≈ 0.2 when routing is balanced (Part 3's "plateau").
        var losses: [(name: String, points: [(x: Double, y: Double)])] = []
        for run in runs {
            let label = run.model is MoEClassifier ? "MoE" : "dense"
            losses.append(("\(label) cross-entropy", run.trainer.history.map { (Double($0.epoch), $0.trainLoss) }))
            if run.model is MoEClassifier {
                losses.append(("MoE α·aux", run.trainer.history.map { (Double($0.epoch), Double(options.auxWeight) * $0.auxLoss) }))
            }
        }
        let lossChart = LineChart(title: "Training loss per epoch", xLabel: "epoch", yLabel: "loss", series: losses)
        try AtomicFile.write(Data(lossChart.svg().utf8), to: directory.appendingPathComponent("loss_curves.svg"))

        if let r = moe?.routing {
            let heat = Heatmap(title: "Digit × expert: share of each digit's routing (test set)",
                               rowLabels: (0..<r.specialization.count).map(String.init),
                               columnLabels: (0..<options.experts).map { "E\($0)" },
                               values: r.specialization, xLabel: "expert", yLabel: "digit")
            try AtomicFile.write(Data(heat.svg().utf8), to: directory.appendingPathComponent("specialization.svg"))
            let bars = BarChart(title: "Expert usage (test set)", xLabel: "expert", yLabel: "share of routed slots",
                                categories: (0..<options.experts).map(String.init),
                                series: [("MoE", r.statistics.usage)],
                                referenceLine: (1 / Double(options.experts), "uniform 1/E"))
            try AtomicFile.write(Data(bars.svg().utf8), to: directory.appendingPathComponent("expert_usage.svg"))
        }
    }
}
