// mnist-moe: Part 3 of "Deconstructing MoE from Scratch", reproduced by a real run.
//
//     swift run mnist-moe              # the walkthrough's setup: MoE and dense, 30 epochs
//     swift run mnist-moe --help       # every option
//
// Loads MNIST (downloading it if missing), trains the MoE classifier
// (8 experts, top-2) and the dense baseline with the same seed and data,
// prints the walkthrough's tables from this run, and writes summary.json,
// SVG plots and checkpoints to --out. Notebooks/part3-mnist.md reads a run.
import Foundation
import MoE
import Exercises

/// One line on standard error and the exit status: 1 for a failed run; 2 for
/// a usage error, which also says where the whole usage is (never prints it).
func fail(_ message: String, usage: Bool = false, status: Int32 = 1) -> Never {
    let line = usage ? UsageError.line(program: "mnist-moe", UsageError(message)) : "mnist-moe: \(message)"
    FileHandle.standardError.write(Data((line + "\n").utf8))
    exit(status)
}

// MARK: - Options

// The exercises' routers and your own become --router words (RouterRegistry.swift).
ExerciseRouters.register()
let options: Options
do {
    options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    fail("\(error)", usage: true, status: 2)
}
if options.help {
    print(Options.usage)
    exit(0)
}
Parallel.threads = options.threads
if options.routing.router == "topk" && options.topK == 1 && options.routing.renormalize {
    // Not an error, but almost never what is meant (Notebooks/part1-foundations.md, §4).
    print("note: top-1 with renormalisation gives every image gate weight 1, so the router learns only from "
          + "the balancing loss; --router switch (or --no-renormalize) scales the expert by its probability")
}

// MARK: - Data

let dataDirectory = MNIST.resolveDirectory(flag: options.dataDir, environment: ProcessInfo.processInfo.environment)
let mnist: MNIST
do {
    let missing = MNIST.missingFiles(in: dataDirectory)
    if !missing.isEmpty {
        guard options.download else {
            fail("\(dataDirectory.path): missing \(missing.joined(separator: ", ")) (run without --no-download to fetch " +
                 "them, from MNIST_MIRRORS if set; or point --data-dir or $MNIST_DIR at a folder that has them)")
        }
        print("MNIST files missing in \(dataDirectory.path); downloading \(missing.count) file(s)")
        // One progress bar per attempt (a file from one mirror), in kilobytes. A
        // bar ends at 100% when its file arrived, or with the reason its mirror
        // failed, before the next mirror is tried. (The callback comes from the
        // download's queue while this thread waits, so there is no race.)
        var bars: [URL: ProgressBar] = [:]
        do {
            try MNISTDownload.downloadMissing(into: dataDirectory) { p in
                let mirror = (p.url.host ?? "mirror") + (p.url.port.map { ":\($0)" } ?? "")
                let total = max(1, ((p.bytesExpected ?? 0) + 1023) / 1024)
                let bar = bars[p.url] ?? ProgressBar(title: "  \(p.file)", total: total)
                bars[p.url] = bar
                if let reason = p.failure {
                    bar.finish(status: "\(mirror) failed: \(reason)")
                } else if let expected = p.bytesExpected, p.bytesReceived >= expected {
                    bar.update(total)
                    bar.finish(status: "from \(mirror)")
                } else {
                    bar.update(min(total, p.bytesReceived / 1024), status: "KiB from \(mirror)")
                }
            }
        } catch let error as DownloadError {
            fail("\(error). Or point --data-dir (or $MNIST_DIR) at a folder that has the files, " +
                 "or set MNIST_MIRRORS to other mirrors (comma-separated base URLs)")
        }
    }
    mnist = try MNIST.load(directory: dataDirectory)
} catch {
    fail("\(error)")
}
guard options.trainSize <= mnist.train.count else {
    fail("--train-size \(options.trainSize) is more than the \(mnist.train.count) training images", usage: true, status: 2)
}
func labeled(_ split: MNISTSplit, _ n: Int) -> LabeledImages {
    let pixels = split.rows * split.cols
    return LabeledImages(images: Array(split.images[0..<(n * pixels)]), labels: split.labels[0..<n].map(Int.init),
                         pixels: pixels)
}
let trainSet = labeled(mnist.train, options.trainSize)
let testSet = labeled(mnist.test, mnist.test.count)

// MARK: - Training

/// Everything a trained model contributes to the tables and summary.json.
struct ModelRun {
    let model: Classifier
    let trainer: Trainer
    var testAccuracy: Double
    var trainSeconds: Double
    var routing: RoutingReport?
}

var config = TrainingConfig()
config.epochs = options.epochs
config.batchSize = options.batchSize
config.learningRate = options.learningRate
config.seed = options.seed
config.shuffle = options.shuffle

let outDirectory = URL(fileURLWithPath: options.outDirectory)

if options.command == "ablate" {
    runAblation()
    exit(0)
}
/// The settings that shape a run, saved in every checkpoint. `--resume` refuses
/// a checkpoint made with different ones: the continuation would not be the run
/// it claims to continue.
let runMetadata: [String: String] = [
    "source": "mnist-moe", "seed": String(options.seed), "train_size": String(options.trainSize),
    "batch_size": String(options.batchSize), "lr": String(options.learningRate),
    "aux_weight": String(options.auxWeight), "experts": String(options.experts), "top_k": String(options.topK),
    "hidden": String(options.hidden), "expert_hidden": String(options.expertHidden), "shuffle": String(options.shuffle),
    "routing": options.routing.summary,
]
let flagOfKey = ["seed": "--seed", "train_size": "--train-size", "batch_size": "--batch-size", "lr": "--lr",
                 "aux_weight": "--aux-weight", "experts": "--experts", "top_k": "--top-k", "hidden": "--hidden",
                 "expert_hidden": "--expert-hidden", "shuffle": "--no-shuffle", "routing": "the routing options"]

func train(_ model: Classifier) -> ModelRun {
    let trainer = Trainer(model: model, config: config)
    do {
        if let path = options.initFrom {
            try Checkpoint.loadWeights(into: model, from: URL(fileURLWithPath: path))
            print("\(model.name): initial weights from \(path)")
        }
        if let path = options.resume {
            let saved = try Safetensors.read(from: URL(fileURLWithPath: path)).metadata
            for (key, value) in runMetadata.sorted(by: { $0.key < $1.key }) where saved[key] != nil && saved[key] != value {
                fail("\(path): was trained with \(key) = \(saved[key]!), this run has \(value); pass \(flagOfKey[key] ?? key) to match")
            }
            try Checkpoint.restoreTrainingState(trainer, from: URL(fileURLWithPath: path))
            print("\(model.name): resuming after epoch \(trainer.epochsDone) from \(path)")
        }
    } catch {
        fail("\(error)")
    }
    let label = model.name == "moe" ? "MoE  " : "Dense"
    while trainer.epochsDone < config.epochs {
        let epoch = trainer.epochsDone + 1
        let bar = ProgressBar(title: "\(label) epoch \(String(format: "%2d", epoch))/\(config.epochs)",
                              total: (trainSet.count + config.batchSize - 1) / config.batchSize)
        bar.reportsTenths = false   // off a terminal: one line per epoch
        var record = trainer.trainEpoch(on: trainSet) { done, _, loss, aux in
            bar.update(done, status: model is MoEClassifier
                       ? String(format: "loss %.4f aux %.3f", loss, aux) : String(format: "loss %.4f", loss))
        }
        record.testAccuracy = Trainer.accuracy(of: model, on: testSet)
        trainer.history[trainer.history.count - 1] = record
        // Short enough for 80 columns with the title and the clock (TerminalOutput.swift).
        bar.finish(status: String(format: "loss %.4f%@ train %.2f%% test %.2f%%",
                                  record.trainLoss, model is MoEClassifier ? String(format: " aux %.3f", record.auxLoss) : "",
                                  100 * record.trainAccuracy, 100 * record.testAccuracy))
    }
    do {
        try Checkpoint.saveWeights(model, to: outDirectory.appendingPathComponent("\(model.name).safetensors"),
                                   metadata: runMetadata)
        try Checkpoint.saveTrainingState(trainer, to: outDirectory.appendingPathComponent("\(model.name).resume.safetensors"),
                                         metadata: runMetadata)
    } catch {
        fail("\(error)")
    }
    let accuracy = trainer.history.last?.testAccuracy ?? Trainer.accuracy(of: model, on: testSet)
    var run = ModelRun(model: model, trainer: trainer, testAccuracy: accuracy.isNaN ? Trainer.accuracy(of: model, on: testSet) : accuracy,
                       trainSeconds: trainer.history.reduce(0) { $0 + $1.seconds }, routing: nil)
    if let moe = model as? MoEClassifier { run.routing = Trainer.routingReport(of: moe, on: testSet) }
    return run
}

print("MNIST: \(trainSet.count) training images, \(testSet.count) test images from \(dataDirectory.path)")
print("\(options.epochs) epochs, batch \(options.batchSize), Adam lr \(options.learningRate), seed \(options.seed), \(options.threads) thread(s)")
print("MoE routing: \(options.routing.summary)\n")

/// The MoE classifier of these options and routing settings (validated by Options.parse).
func makeMoE(_ routing: RoutingSetup) -> MoEClassifier {
    var rng = Xoshiro256(seed: options.seed)
    return MoEClassifier(inputSize: trainSet.pixels, hidden: options.hidden, classes: 10, rng: &rng) { rng in
        routing.makeLayer(modelDim: options.hidden, hiddenDim: options.expertHidden, experts: options.experts,
                          seed: options.seed, rng: &rng)
    }
}

var runs: [ModelRun] = []
if options.model != "dense" {
    runs.append(train(makeMoE(options.routing)))
}
if options.model != "moe" {
    var rng = Xoshiro256(seed: options.seed)
    runs.append(train(DenseClassifier(inputSize: trainSet.pixels, hidden: options.hidden,
                                      expertHidden: options.expertHidden, classes: 10, rng: &rng)))
}

// MARK: - Report

let report = RunReport(options: options, runs: runs)
print(report.tables())
do {
    try report.write(to: outDirectory)
} catch {
    fail("\(error)")
}
print("Wrote \(outDirectory.path)/: summary.json, \(report.plotNames.joined(separator: ", ")), " +
      runs.map { "\($0.model.name).safetensors" }.joined(separator: ", "))
