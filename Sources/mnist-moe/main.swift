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
    // Not an error, but almost never what is meant (Notebooks/part1-foundations.md, §9).
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
/// The first `n` images of a split, or `n` drawn with `seed` (kept in file
/// order), scaled to [0, 1] and normalised as --normalize says.
func labeled(_ split: MNISTSplit, _ n: Int, choice: SubsetChoice = .first, seed: UInt64 = 0) -> LabeledImages {
    let pixels = split.rows * split.cols
    var indices = Array(0..<split.labels.count)
    if choice == .random && n < indices.count {
        var rng = Xoshiro256(seed: seed ^ 0x5B5E_7000)   // a stream of its own: the subset does not move the weights
        rng.shuffle(&indices)
        indices = Array(indices[0..<n]).sorted()
    } else {
        indices = Array(indices[0..<n])
    }
    var images = [Float](repeating: 0, count: n * pixels)
    for (r, i) in indices.enumerated() {
        for j in 0..<pixels {
            let x = split.images[i * pixels + j]
            images[r * pixels + j] = options.normalize == .meanstd ? (x - 0.1307) / 0.3081 : x
        }
    }
    return LabeledImages(images: images, labels: indices.map { Int(split.labels[$0]) }, pixels: pixels)
}
let testSet = labeled(mnist.test, mnist.test.count)
/// The training images of a seed (they differ between seeds only with --subset random).
func trainingSet(seed: UInt64) -> LabeledImages { labeled(mnist.train, options.trainSize, choice: options.subset, seed: seed) }
var trainSet = trainingSet(seed: options.seed)

// MARK: - Memory

/// What the run will hold at once, added up before any model exists
/// (MemoryBudget.swift): every parameter four times (value, gradient, Adam's m
/// and v) plus three more while a checkpoint is written; one batch's
/// activations and their gradients (evaluation runs 1,000 images at a time);
/// and the images, already loaded. `pixels` per image; `images` floats held.
func checkMemory(pixels: Int, images: Int) throws {
    let p = Double(pixels), d = Double(options.hidden), h = Double(options.expertHidden)
    let e = Double(options.experts), k = Double(options.topK), s = Double(options.routing.sharedExperts)
    let expert = d * h + h + h * d + d
    let moe = p * d + d + 2 * d * e + e + (e + s) * expert + d * 10 + 10
    let dense = p * d + d + expert + d * 10 + 10
    let parameters = (options.model != "dense" ? moe : 0) + (options.model != "moe" ? dense : 0)
    let rows = Double(max(options.batchSize, 1000))
    let activations = 2 * rows * (p + 4 * d + 2 * (k + s) * (d + 2 * h) + 4 * e + 40) * 4
    let data = Double(images) * 4
    let perParameter = 28.0
    try MemoryBudget.check(parameters * perParameter + activations + data,
                           what: "--hidden \(options.hidden) --expert-hidden \(options.expertHidden) --experts \(options.experts) "
                               + "on \(pixels)-pixel images",
                           breakdown: "\(MemoryBudget.formatCount(parameters)) parameters × \(Int(perParameter)) bytes for weights, "
                               + "gradients, Adam's moments and the checkpoint being written, \(MemoryBudget.format(activations)) "
                               + "of activations, \(MemoryBudget.format(data)) of images",
                           advice: pixels == 28 * 28 ? "use a smaller --hidden, --expert-hidden or --experts"
                               : "\(dataDirectory.path) holds \(mnist.train.rows)x\(mnist.train.cols) images, not MNIST's 28x28")
}
do {
    // First as if the images were MNIST's 28x28: then it is the flags that ask too much (usage, 2) …
    try checkMemory(pixels: 28 * 28, images: (60_000 + 10_000 + options.trainSize) * 28 * 28)
} catch {
    fail("\(error)", status: 2)
}
do {
    // … then with the images the folder really holds: too large ones are bad data (1).
    try checkMemory(pixels: trainSet.pixels,
                    images: mnist.train.images.count + mnist.test.images.count + trainSet.images.count)
} catch {
    fail("\(error)")
}

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
func runMetadata(seed: UInt64) -> [String: String] { [
    "source": "mnist-moe", "seed": String(seed), "variant": options.variant.rawValue,
    "normalize": options.normalize.rawValue, "subset": options.subset.rawValue, "train_size": String(options.trainSize),
    "batch_size": String(options.batchSize), "lr": String(options.learningRate),
    "aux_weight": String(options.auxWeight), "experts": String(options.experts), "top_k": String(options.topK),
    "hidden": String(options.hidden), "expert_hidden": String(options.expertHidden), "shuffle": String(options.shuffle),
    "routing": options.routing.summary,
] }
let flagOfKey = ["seed": "--seed", "train_size": "--train-size", "batch_size": "--batch-size", "lr": "--lr",
                 "aux_weight": "--aux-weight", "experts": "--experts", "top_k": "--top-k", "hidden": "--hidden",
                 "expert_hidden": "--expert-hidden", "shuffle": "--no-shuffle", "routing": "the routing options",
                 "variant": "--variant", "normalize": "--normalize", "subset": "--subset"]

func train(_ model: Classifier, seed: UInt64, into outDirectory: URL) -> ModelRun {
    let runMetadata = runMetadata(seed: seed)
    var config = config
    config.seed = seed
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
            // A file of these settings (checked above) took exactly this many steps per epoch.
            try Checkpoint.restoreTrainingState(trainer, from: URL(fileURLWithPath: path),
                                                batchesPerEpoch: (trainSet.count + config.batchSize - 1) / config.batchSize)
            guard trainer.epochsDone <= config.epochs else {
                fail("\(path): has \(trainer.epochsDone) epochs done, more than --epochs \(config.epochs); pass --epochs \(trainer.epochsDone) or more")
            }
            print("\(model.name): resuming after epoch \(trainer.epochsDone) from \(path)")
            // A router registered from outside the library (RouterRegistry) may draw random
            // numbers without saving its generator: then the continued run cannot match an
            // uninterrupted one, and nothing else would say so.
            if let moe = model as? MoEClassifier, options.routing.isRegisteredRouter,
               moe.moe.router.randomState.isEmpty {
                print("\(model.name): note: router '\(options.routing.router)' saves no random state (Router.swift, randomState);"
                      + " if it draws random numbers, this run will not match an uninterrupted one")
            }
        }
    } catch {
        fail("\(error)")
    }
    let label = (model.name == "moe" ? "MoE  " : "Dense") + (options.seeds != nil ? " seed \(seed)" : "")
    while trainer.epochsDone < config.epochs {
        let epoch = trainer.epochsDone + 1
        let bar = ProgressBar(title: "\(label) epoch \(String(format: "%2d", epoch))/\(config.epochs)",
                              total: (trainSet.count + config.batchSize - 1) / config.batchSize)
        bar.reportsTenths = false   // off a terminal: one line per epoch
        var record = trainer.trainEpoch(on: trainSet) { done, _, loss, aux in
            bar.update(done, status: model is MoEClassifier
                       ? String(format: "loss %.4f aux %.3f", loss, aux) : String(format: "loss %.4f", loss))
        }
        if let bad = trainer.nonFiniteLoss {
            bar.finish(status: "stopped")
            fail("\(model.name): the loss became \(bad.loss) at epoch \(bad.epoch), step \(bad.step); stopped before "
                 + "writing anything, so the files in \(outDirectory.path) are as they were")
        }
        record.testAccuracy = Trainer.accuracy(of: model, on: testSet)
        trainer.history[trainer.history.count - 1] = record
        // Short enough for 80 columns with the title and the clock (TerminalOutput.swift).
        bar.finish(status: String(format: "ce %.4f%@ train %.2f%% test %.2f%%",
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

let seedList = options.seeds ?? [options.seed]
print("MNIST: \(trainSet.count) training images (\(options.subset.rawValue)), \(testSet.count) test images from \(dataDirectory.path); "
      + "pixels \(options.normalize == .none ? "/ 255" : "mean/std normalised")")
print("\(counted(options.epochs, "epoch")), batch \(options.batchSize), Adam lr \(options.learningRate), "
      + (options.seeds == nil ? "seed \(options.seed)" : "seeds \(seedList.map(String.init).joined(separator: ","))")
      + ", \(options.threads) thread(s)")
if options.model == "dense" {   // no router to describe
    print("Model: the dense baseline, \(options.variant == .walkthrough ? "ReLU after the FFN" : "v1, no ReLU after the FFN")\n")
} else {
    print("Model: \(options.variant == .walkthrough ? "the walkthrough's (ReLU after the MoE)" : "v1 (no ReLU after the MoE)"); "
          + "MoE routing: \(options.routing.summary)\n")
}

/// The MoE classifier of these options and routing settings (validated by Options.parse).
func makeMoE(_ routing: RoutingSetup, seed: UInt64 = options.seed) -> MoEClassifier {
    var rng = Xoshiro256(seed: seed)
    return MoEClassifier(inputSize: trainSet.pixels, hidden: options.hidden, classes: 10,
                         reluAfterMoE: options.variant == .walkthrough, rng: &rng) { rng in
        routing.makeLayer(modelDim: options.hidden, hiddenDim: options.expertHidden, experts: options.experts,
                          seed: seed, rng: &rng)
    }
}

/// Both models (as --model says) of one seed, trained, checkpointed in `directory`.
func runSeed(_ seed: UInt64, into directory: URL) -> [ModelRun] {
    trainSet = trainingSet(seed: seed)
    var runs: [ModelRun] = []
    if options.model != "dense" {
        runs.append(train(makeMoE(options.routing, seed: seed), seed: seed, into: directory))
    }
    if options.model != "moe" {
        var rng = Xoshiro256(seed: seed)
        runs.append(train(DenseClassifier(inputSize: trainSet.pixels, hidden: options.hidden,
                                          expertHidden: options.expertHidden, classes: 10, variant: options.variant,
                                          rng: &rng), seed: seed, into: directory))
    }
    return runs
}

// MARK: - Report

if options.seeds == nil {
    let runs = runSeed(options.seed, into: outDirectory)
    let report = RunReport(options: options, runs: runs)
    print(report.tables())
    do {
        try report.write(to: outDirectory)
    } catch {
        fail("\(error)")
    }
    print("Wrote \(outDirectory.path)/: summary.json, \(report.plotNames.joined(separator: ", ")), " +
          runs.map { "\($0.model.name).safetensors, \($0.model.name).resume.safetensors" }.joined(separator: ", "))
} else {
    var perSeed: [(seed: UInt64, runs: [ModelRun])] = []
    for seed in seedList {
        let directory = outDirectory.appendingPathComponent("seed-\(seed)")
        let runs = runSeed(seed, into: directory)
        let report = RunReport(options: options, runs: runs, seed: seed)
        do { try report.write(to: directory) } catch { fail("\(error)") }
        print(report.seedLine())
        perSeed.append((seed, runs))
    }
    let spread = SeedSpreadReport(options: options, seeds: perSeed)
    print(spread.tables())
    do { try spread.write(to: outDirectory) } catch { fail("\(error)") }
    print("Wrote \(outDirectory.path)/: summary.json, \(SeedSpreadReport.plotNames.joined(separator: ", ")), "
          + "and seed-N/ with each seed's summary.json, plots and checkpoints")
}
