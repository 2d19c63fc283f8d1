// HubDownload: fetching a checkpoint folder from the Hugging Face hub by its
// public file URLs, with nothing but URLSession.
//
// Every file of a public repository is served at
//
//     {endpoint}/{owner}/{name}/resolve/{revision}/{file}        endpoint: https://huggingface.co
//
// (the endpoint can be changed with HF_ENDPOINT, as the hub's own client
// allows; the tests point it at a server on 127.0.0.1). A checkpoint needs
// config.json, tokenizer.json and either model.safetensors or
// model.safetensors.index.json plus the shards that index names.
//
// Weights are gigabytes, so a download must survive being interrupted:
//   * bytes go straight to `FILE.incomplete` on disk (never all in memory);
//   * a later run finds that partial file and asks only for the rest, with an
//     HTTP Range request; a server that answers 206 appends, one that answers
//     200 (it ignores ranges) starts the file over;
//   * only a complete file is renamed to its real name — a rename within one
//     folder is atomic, so `FILE` is either absent or whole — and a file that
//     already exists is not fetched again;
//   * a truncated transfer (fewer bytes than Content-Length) stays .incomplete.
// No connection, a 404 or a 401 (gated repository) is a one-line error.
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

public enum HubDownload {
    /// The hub, or HF_ENDPOINT when set.
    public static func endpoint(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        URL(string: environment["HF_ENDPOINT"] ?? "https://huggingface.co")!
    }

    /// The public URL of `file` in `repo` at `revision`.
    public static func fileURL(endpoint: URL, repo: String, revision: String, file: String) -> URL {
        endpoint.appendingPathComponent(repo).appendingPathComponent("resolve")
            .appendingPathComponent(revision).appendingPathComponent(file)
    }

    /// Progress of one file: its name, bytes on disk so far, and the total if the server said.
    public typealias Progress = (_ file: String, _ bytes: Int, _ total: Int?) -> Void

    /// Downloads the checkpoint `repo` ("owner/name") into `directory`. Returns the files it holds.
    public static func download(repo: String, revision: String = "main", into directory: URL,
                                endpoint: URL = HubDownload.endpoint(), timeout: TimeInterval = 60,
                                progress: @escaping Progress = { _, _, _ in }) throws -> [String] {
        let parts = repo.split(separator: "/")
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && !$0.hasPrefix(".") }) else {
            throw PretrainedError(file: repo, problem: "is not a repository name of the form owner/name")
        }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var files = ["config.json", "tokenizer.json"]
        for file in files {
            try fetch(fileURL(endpoint: endpoint, repo: repo, revision: revision, file: file),
                      to: directory.appendingPathComponent(file), timeout: timeout, progress: progress)
        }
        let index = "model.safetensors.index.json"
        do {
            try fetch(fileURL(endpoint: endpoint, repo: repo, revision: revision, file: index),
                      to: directory.appendingPathComponent(index), timeout: timeout, progress: progress)
        } catch let e as HTTPStatusError where e.status == 404 {
            // Not sharded: one model.safetensors.
            try fetch(fileURL(endpoint: endpoint, repo: repo, revision: revision, file: "model.safetensors"),
                      to: directory.appendingPathComponent("model.safetensors"), timeout: timeout, progress: progress)
            return files + ["model.safetensors"]
        }
        files.append(index)
        let indexPath = directory.appendingPathComponent(index)
        guard let data = FileManager.default.contents(atPath: indexPath.path),
              let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let map = object["weight_map"] as? [String: String] else {
            throw PretrainedError(file: indexPath.path, problem: "not a JSON object with a \"weight_map\" of file names")
        }
        for shard in Set(map.values).sorted() {
            guard !shard.contains("/"), !shard.hasPrefix(".") else {
                throw PretrainedError(file: indexPath.path, problem: "names shard '\(shard)', which is not a plain file name")
            }
            try fetch(fileURL(endpoint: endpoint, repo: repo, revision: revision, file: shard),
                      to: directory.appendingPathComponent(shard), timeout: timeout, progress: progress)
            files.append(shard)
        }
        return files
    }

    struct HTTPStatusError: Error, CustomStringConvertible {
        let url: URL, status: Int
        var description: String {
            let hint = status == 401 || status == 403 ? " (the repository is gated or private)" : status == 404 ? " (no such file at this revision)" : ""
            return "\(url.absoluteString): HTTP \(status)\(hint)"
        }
    }

    /// Fetches `url` into `target`, resuming `target.incomplete`; skips a `target` that exists.
    static func fetch(_ url: URL, to target: URL, timeout: TimeInterval, progress: @escaping Progress) throws {
        let name = target.lastPathComponent
        if FileManager.default.fileExists(atPath: target.path) { return }
        let partial = target.appendingPathExtension("incomplete")
        if !FileManager.default.fileExists(atPath: partial.path) {
            _ = FileManager.default.createFile(atPath: partial.path, contents: nil)
        }
        guard let handle = FileHandle(forWritingAtPath: partial.path) else {
            throw PretrainedError(file: partial.path, problem: "cannot open for writing")
        }
        defer { try? handle.close() }
        let have = Int(handle.seekToEndOfFile())

        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = timeout
        configuration.timeoutIntervalForResource = 7 * 24 * 3600   // a 14 GB shard on a slow link takes hours
        let receiver = Receiver(handle: handle, already: have) { progress(name, $0, $1) }
        let session = URLSession(configuration: configuration, delegate: receiver, delegateQueue: nil)
        defer { session.invalidateAndCancel() }
        var request = URLRequest(url: url)
        request.timeoutInterval = timeout
        if have > 0 { request.setValue("bytes=\(have)-", forHTTPHeaderField: "Range") }
        session.dataTask(with: request).resume()
        receiver.finished.wait()
        // A failure before any byte arrived leaves nothing worth resuming.
        var succeeded = false
        defer { if !succeeded && receiver.written == 0 && have == 0 { try? FileManager.default.removeItem(at: partial) } }

        if let error = receiver.error {
            let reason = (error as? URLError).map { "\($0.localizedDescription)" } ?? "\(error)"
            throw PretrainedError(file: url.absoluteString, problem: "download failed (\(reason.split(whereSeparator: \.isNewline).joined(separator: " "))); run the command again to resume")
        } else if receiver.status == 416 && have > 0 {
            // The range starts at the end: the partial file was already complete.
        } else if let status = receiver.status, status != 200 && status != 206 {
            throw HTTPStatusError(url: url, status: status)
        } else if receiver.status == nil {
            throw PretrainedError(file: url.absoluteString, problem: "no HTTP response")
        } else if let error = receiver.writeError {
            throw PretrainedError(file: partial.path, problem: "cannot write (\(error))")
        } else if let total = receiver.total, receiver.written != total {
            throw PretrainedError(file: url.absoluteString, problem: "connection closed after \(receiver.written) of \(total) bytes; run the command again to resume")
        }
        try handle.synchronize()
        try FileManager.default.moveItem(at: partial, to: target)   // atomic: same folder
        succeeded = true
    }

    /// Writes one response body to disk as it arrives. URLSession calls these
    /// one at a time on its queue; `fetch` reads the fields after `finished`.
    final class Receiver: NSObject, URLSessionDataDelegate, @unchecked Sendable {
        let handle: FileHandle
        let already: Int
        let progress: (Int, Int?) -> Void
        let finished = DispatchSemaphore(value: 0)
        var status: Int?
        var total: Int?          // the size the file will have when complete
        var written = 0          // bytes of the file on disk
        var error: Error?
        var writeError: Error?

        init(handle: FileHandle, already: Int, progress: @escaping (Int, Int?) -> Void) {
            self.handle = handle; self.already = already; self.progress = progress
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
            status = (response as? HTTPURLResponse)?.statusCode
            let length = response.expectedContentLength >= 0 ? Int(response.expectedContentLength) : nil
            if status == 206 {
                written = already
                total = length.map { $0 + already }
            } else if status == 200 {
                // The server sent the whole file: start over.
                try? handle.truncate(atOffset: 0)
                written = 0
                total = length
            }
            completionHandler(status == 200 || status == 206 ? .allow : .cancel)
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
            do { try handle.write(contentsOf: data) } catch { writeError = error; dataTask.cancel(); return }
            written += data.count
            progress(written, total)
        }

        func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
            // A cancelled non-2xx response also ends with an error; its status says more.
            if writeError == nil, status == nil || status == 200 || status == 206 { self.error = error }
            finished.signal()
        }
    }
}
