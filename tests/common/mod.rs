//! Test harness: real components, shared per test binary.
//!
//! - PostgreSQL: one ephemeral cluster (initdb/pg_ctl, as the `postgres`
//!   user when running as root) with scram-sha-256 password auth on a free
//!   loopback port, or the server in `DRCTL_TEST_DATABASE_URL`. Each test
//!   gets its own databases. The cluster is stopped when the binary exits.
//! - S3: an in-process S3-protocol server (s3s + s3s-fs) on loopback with
//!   signature checks, or the endpoint in `DRCTL_TEST_S3_ENDPOINT` (e.g.
//!   moto_server). Each test gets its own bucket.
//! - The `drctl` binary itself, run as a child with its own environment.
#![allow(dead_code)]

pub mod docker;
pub mod receivers;
pub mod tmpfs;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const PG_PASSWORD: &str = "Sup3r-Secret-PW-7731";
pub const S3_ACCESS_KEY: &str = "drctl-test-access";
pub const S3_SECRET_KEY: &str = "drctl-test-secret-key-0042";

/// Paths removed and clusters stopped at process exit.
static CLEANUP: Mutex<Vec<(Option<PathBuf>, PathBuf)>> = Mutex::new(Vec::new());

/// Processes (a shared dockerd) sent SIGTERM at exit, and waited for.
static STOP: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// SIGTERM `pid` when the test binary exits (before its files are removed).
pub fn stop_at_exit(pid: u32) {
    register_cleanup_hook();
    STOP.lock().unwrap().push(pid);
}

extern "C" fn at_exit() {
    for pid in STOP.lock().map(|v| v.clone()).unwrap_or_default() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..200 {
            if nix::sys::signal::kill(pid, None).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let items = CLEANUP.lock().map(|v| v.clone()).unwrap_or_default();
    for (cluster, dir) in items {
        if let Some(data) = cluster {
            let _ = as_postgres(
                &pg_bin("pg_ctl"),
                &[
                    "stop",
                    "-m",
                    "immediate",
                    "-w",
                    "-D",
                    data.to_str().unwrap_or(""),
                ],
            )
            .output();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn register_cleanup_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| unsafe {
        libc::atexit(at_exit);
    });
}

fn register_cleanup(cluster: Option<PathBuf>, dir: PathBuf) {
    register_cleanup_hook();
    CLEANUP.lock().unwrap().push((cluster, dir));
}

pub fn pg_bindir() -> PathBuf {
    drctl_pg_bindir()
}

fn drctl_pg_bindir() -> PathBuf {
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in rd.flatten() {
            if let Some(v) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                let bin = e.path().join("bin");
                if bin.join("initdb").is_file() && best.as_ref().is_none_or(|(b, _)| v > *b) {
                    best = Some((v, bin));
                }
            }
        }
    }
    best.map(|(_, p)| p).expect(
        "PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)",
    )
}

pub fn pg_bin(tool: &str) -> PathBuf {
    pg_bindir().join(tool)
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Run a server tool as `postgres` when we are root (initdb refuses root).
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory that the `postgres` user can use too.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap()
        .keep();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    register_cleanup(None, d.clone());
    d
}

pub struct Pg {
    /// Superuser URL of the maintenance database (password included).
    pub admin_url: url::Url,
}

static PG: OnceLock<Pg> = OnceLock::new();

pub fn pg() -> &'static Pg {
    PG.get_or_init(|| {
        if let Ok(u) = std::env::var("DRCTL_TEST_DATABASE_URL") {
            return Pg { admin_url: url::Url::parse(&u).expect("DRCTL_TEST_DATABASE_URL is a URL") };
        }
        let dir = tempfile::Builder::new().prefix("drctl-pg-").tempdir().unwrap().keep();
        let data = dir.join("data");
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PG_PASSWORD).unwrap();
        if is_root() {
            let st = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
            assert!(st.success());
        }
        let out = as_postgres(
            &pg_bin("initdb"),
            &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=scram-sha-256", "--pwfile", pwfile.to_str().unwrap(), "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=128MB",
            dir.display()
        );
        register_cleanup(Some(data.clone()), dir.clone());
        let out = as_postgres(&pg_bin("pg_ctl"), &["start", "-w", "-t", "60", "-D", data.to_str().unwrap(), "-l", dir.join("log").to_str().unwrap(), "-o", &opts])
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {} {}", String::from_utf8_lossy(&out.stdout), std::fs::read_to_string(dir.join("log")).unwrap_or_default());
        let admin_url = url::Url::parse(&format!("postgres://postgres:{PG_PASSWORD}@127.0.0.1:{port}/postgres")).unwrap();
        Pg { admin_url }
    })
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A name unique within this test run: `<prefix>_<pid>_<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

impl Pg {
    pub fn url(&self, db: &str) -> String {
        let mut u = self.admin_url.clone();
        u.set_path(&format!("/{db}"));
        u.to_string()
    }

    /// Run SQL with psql against `db`, panicking on error; returns stdout (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(pg_bin("psql"))
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(db),
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn create_db(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    pub fn db_exists(&self, name: &str) -> bool {
        self.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
        ) == "1"
    }

    /// Per-table fingerprint: owner, row count and md5 of the sorted rows.
    pub fn fingerprint(&self, db: &str) -> String {
        self.psql(
            db,
            "SELECT string_agg(t, E'\\n' ORDER BY t) FROM (
               SELECT format('%s.%s owner=%s', schemaname, tablename, tableowner) AS t FROM pg_tables
               WHERE schemaname NOT IN ('pg_catalog','information_schema')) x",
        ) + "\n"
            + &self.table_digests(db)
    }

    fn table_digests(&self, db: &str) -> String {
        let tables = self.psql(
            db,
            "SELECT string_agg(format('%I.%I', schemaname, tablename), E'\\n' ORDER BY schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema')",
        );
        tables
            .lines()
            .map(|t| {
                let d = self.psql(db, &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"));
                format!("{t} {d}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A database with several schemas, owners and kinds of data.
    pub fn seed(&self, db: &str, owner: &str, rows: u32) {
        self.psql("postgres", &format!("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{owner}') THEN CREATE ROLE {owner} LOGIN PASSWORD 'owner-pw-1234'; END IF; END $$"));
        self.psql(
            db,
            &format!(
                "CREATE SCHEMA billing AUTHORIZATION {owner};
                 CREATE TABLE public.customer (id bigint PRIMARY KEY, name text NOT NULL, email text, created timestamptz DEFAULT now());
                 ALTER TABLE public.customer OWNER TO {owner};
                 CREATE TABLE billing.payment (id bigserial PRIMARY KEY, customer_id bigint REFERENCES public.customer(id), amount numeric(12,2), result text, payload bytea);
                 ALTER TABLE billing.payment OWNER TO {owner};
                 CREATE TABLE public.\"Odd Name\" (k int, v jsonb);
                 INSERT INTO public.customer SELECT i, 'customer ' || i, 'c' || i || '@example.com', '2026-01-01'::timestamptz + i * interval '1 minute' FROM generate_series(1, {rows}) i;
                 INSERT INTO billing.payment (customer_id, amount, result, payload)
                   SELECT (i % {rows}) + 1, (i * 7 % 10000) / 100.0, CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'paid' END, decode(md5(i::text), 'hex') FROM generate_series(1, {rows} * 2) i;
                 INSERT INTO public.\"Odd Name\" SELECT i, jsonb_build_object('i', i) FROM generate_series(1, 10) i;
                 CREATE INDEX ON billing.payment (customer_id);
                 CREATE VIEW billing.paid AS SELECT * FROM billing.payment WHERE result = 'paid';"
            ),
        );
    }
}

pub struct S3 {
    pub endpoint: String,
    /// Where s3s-fs keeps objects (`<root>/<bucket>/<key>`); None for an external endpoint.
    pub root: Option<PathBuf>,
}

/// Buckets whose name starts with this lose the last part of every
/// multipart upload at completion, and the store still answers 200: the store bug a
/// commit must catch ("CompleteMultipartUpload answered 200 with a part
/// missing").
pub const LOSSY_BUCKET: &str = "lossy-";

/// The in-process store: s3s-fs as it is, except for [`LOSSY_BUCKET`]s.
struct Store(s3s_fs::FileSystem);

#[async_trait::async_trait]
impl s3s::S3 for Store {
    async fn create_bucket(
        &self,
        req: s3s::S3Request<s3s::dto::CreateBucketInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CreateBucketOutput>> {
        self.0.create_bucket(req).await
    }

    async fn copy_object(
        &self,
        req: s3s::S3Request<s3s::dto::CopyObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CopyObjectOutput>> {
        self.0.copy_object(req).await
    }

    async fn delete_bucket(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteBucketInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteBucketOutput>> {
        self.0.delete_bucket(req).await
    }

    async fn delete_object(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectOutput>> {
        self.0.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectsOutput>> {
        self.0.delete_objects(req).await
    }

    async fn get_bucket_location(
        &self,
        req: s3s::S3Request<s3s::dto::GetBucketLocationInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketLocationOutput>> {
        self.0.get_bucket_location(req).await
    }

    async fn get_object(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
        self.0.get_object(req).await
    }

    async fn head_bucket(
        &self,
        req: s3s::S3Request<s3s::dto::HeadBucketInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::HeadBucketOutput>> {
        self.0.head_bucket(req).await
    }

    async fn head_object(
        &self,
        req: s3s::S3Request<s3s::dto::HeadObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::HeadObjectOutput>> {
        self.0.head_object(req).await
    }

    async fn list_buckets(
        &self,
        req: s3s::S3Request<s3s::dto::ListBucketsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListBucketsOutput>> {
        self.0.list_buckets(req).await
    }

    async fn list_objects(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsOutput>> {
        self.0.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsV2Input>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsV2Output>> {
        self.0.list_objects_v2(req).await
    }

    async fn put_object(
        &self,
        req: s3s::S3Request<s3s::dto::PutObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectOutput>> {
        self.0.put_object(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: s3s::S3Request<s3s::dto::CreateMultipartUploadInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CreateMultipartUploadOutput>> {
        self.0.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: s3s::S3Request<s3s::dto::UploadPartInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::UploadPartOutput>> {
        self.0.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: s3s::S3Request<s3s::dto::UploadPartCopyInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::UploadPartCopyOutput>> {
        self.0.upload_part_copy(req).await
    }

    async fn list_parts(
        &self,
        req: s3s::S3Request<s3s::dto::ListPartsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListPartsOutput>> {
        self.0.list_parts(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: s3s::S3Request<s3s::dto::AbortMultipartUploadInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::AbortMultipartUploadOutput>> {
        self.0.abort_multipart_upload(req).await
    }

    async fn complete_multipart_upload(
        &self,
        mut req: s3s::S3Request<s3s::dto::CompleteMultipartUploadInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CompleteMultipartUploadOutput>> {
        if req.input.bucket.starts_with(LOSSY_BUCKET) {
            if let Some(parts) = req
                .input
                .multipart_upload
                .as_mut()
                .and_then(|m| m.parts.as_mut())
            {
                if parts.len() > 1 {
                    parts.pop();
                }
            }
        }
        self.0.complete_multipart_upload(req).await
    }
}

static S3_SERVER: OnceLock<S3> = OnceLock::new();

pub fn s3() -> &'static S3 {
    S3_SERVER.get_or_init(|| {
        if let Ok(e) = std::env::var("DRCTL_TEST_S3_ENDPOINT") {
            return S3 {
                endpoint: e,
                root: None,
            };
        }
        let root = scratch_dir("drctl-s3-");
        let (tx, rx) = std::sync::mpsc::channel();
        let fs_root = root.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use hyper_util::rt::{TokioExecutor, TokioIo};
                use hyper_util::server::conn::auto::Builder as ConnBuilder;
                let fs = s3s_fs::FileSystem::new(&fs_root)
                    .map_err(|e| format!("{e:?}"))
                    .unwrap();
                let mut b = s3s::service::S3ServiceBuilder::new(Store(fs));
                b.set_auth(s3s::auth::SimpleAuth::from_single(
                    S3_ACCESS_KEY,
                    S3_SECRET_KEY,
                ));
                let service = b.build();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap().port()).unwrap();
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        continue;
                    };
                    let conn = http
                        .serve_connection(TokioIo::new(sock), service.clone())
                        .into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
        });
        let port = rx.recv().unwrap();
        S3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            root: Some(root),
        }
    })
}

/// An SDK client for a loopback S3 server, with the test credentials.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let creds =
        aws_sdk_s3::config::Credentials::new(access_key(), secret_key(), None, None, "test");
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

impl S3 {
    pub async fn client(&self) -> aws_sdk_s3::Client {
        s3_client(&self.endpoint)
    }

    /// The bytes of `bucket/key`.
    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.client()
            .await
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {bucket}/{key}: {e:?}"))
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec()
    }

    /// Replace `bucket/key` with `bytes` (a test damaging a stored object).
    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        self.client()
            .await
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {bucket}/{key}: {e:?}"));
    }

    /// The keys under `prefix` (one page: tests store few objects).
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.client()
            .await
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap_or_else(|e| panic!("LIST {bucket}/{prefix}: {e:?}"))
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    pub async fn create_bucket(&self) -> String {
        let name = unique("bucket").replace('_', "-");
        self.client()
            .await
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .unwrap();
        name
    }
}

fn access_key() -> String {
    std::env::var("DRCTL_TEST_S3_ACCESS_KEY").unwrap_or_else(|_| S3_ACCESS_KEY.into())
}
fn secret_key() -> String {
    std::env::var("DRCTL_TEST_S3_SECRET_KEY").unwrap_or_else(|_| S3_SECRET_KEY.into())
}

/// One test's world: a config file, a state dir and the env for `drctl`.
/// A command prefix that runs the rest in a UTS namespace of its own under
/// the host name that follows it: `&[AS_HOST[0], ..., "db2"]` via
/// [`as_host`]. Two "hosts" on one machine, as drctl sees them.
pub const AS_HOST: [&str; 5] = [
    "unshare",
    "--uts",
    "sh",
    "-c",
    "hostname \"$0\" && exec \"$@\"",
];

/// [`AS_HOST`] with the host name.
pub fn as_host(host: &str) -> Vec<&str> {
    let mut p = AS_HOST.to_vec();
    p.push(host);
    p
}

pub struct World {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub env: Vec<(String, String)>,
}

impl World {
    /// Flip one byte in the middle of the artifact of backup `id` of `job`
    /// whose name holds `artifact` (`database.dump`, `files.tar`) in a
    /// local repository: what a damaged disk or a tampered bucket does.
    pub fn corrupt_artifact(&self, job: &str, id: &str, artifact: &str) {
        let path = std::fs::read_dir(self.repo_dir().join(job).join(id))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains(artifact))
            .unwrap_or_else(|| panic!("no {artifact} in backup {id} of {job}"));
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }

    /// `drctl status --json`'s row for `job`.
    pub fn job_status(&self, job: &str) -> serde_json::Value {
        let r = self.drctl(&["status", "--json"]);
        let rows: serde_json::Value = serde_json::from_str(&r.ok().stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .find(|j| j["job"] == job)
            .cloned()
            .unwrap_or_else(|| panic!("no job {job} in status: {rows}"))
    }

    /// `body` is the config after `state_dir`; `{dir}` expands to the world's directory.
    pub fn new(body: &str) -> World {
        let dir = scratch_dir("drctl-world-");
        let config = dir.join("drctl.toml");
        let text = format!(
            "state_dir = \"{}/state\"\n{}",
            dir.display(),
            body.replace("{dir}", &dir.display().to_string())
        );
        std::fs::write(&config, text).unwrap();
        World {
            dir,
            config,
            env: vec![
                ("AWS_ACCESS_KEY_ID".into(), access_key()),
                ("AWS_SECRET_ACCESS_KEY".into(), secret_key()),
                ("AWS_REGION".into(), "us-east-1".into()),
                ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
                ("DRCTL_LOG".into(), "debug".into()),
            ],
        }
    }

    pub fn set_env(&mut self, k: &str, v: &str) {
        self.env.retain(|(a, _)| a != k);
        self.env.push((k.into(), v.into()));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_via(&[], args)
    }

    /// `drctl -c CONFIG ARGS` of this world run through `prefix` (e.g.
    /// `setpriv --reuid=65534 --`, or [`AS_HOST`] and a host name): the
    /// prefix's program gets drctl's path and its arguments.
    pub fn command_via(&self, prefix: &[&str], args: &[&str]) -> Command {
        let mut c = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(env!("CARGO_BIN_EXE_drctl"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_drctl")),
        };
        c.arg("-c")
            .arg(&self.config)
            .args(args)
            .env_remove("DRCTL_CONFIG");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(std::process::Stdio::null());
        c
    }

    pub fn drctl(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().unwrap();
        Run::from(out)
    }

    pub fn repo_dir(&self) -> PathBuf {
        self.dir.join("repo")
    }

    pub async fn state(&self) -> drctl::services::state::State {
        drctl::services::state::State::open(&self.dir.join("state"))
            .await
            .unwrap()
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "drctl failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A directory with wrappers for the PostgreSQL tools: every tool links to
/// the real one except those given a script body.
pub fn tool_wrappers(scripts: &[(&str, &str)]) -> PathBuf {
    let dir = scratch_dir("drctl-bin-");
    for tool in ["pg_dump", "pg_dumpall", "pg_restore", "psql"] {
        let path = dir.join(tool);
        if let Some((_, body)) = scripts.iter().find(|(t, _)| *t == tool) {
            let real = pg_bin(tool);
            // A pg_restore wrapper is about restores: the backup's own
            // archive check (`pg_restore --file=/dev/null`) goes straight
            // to the real tool.
            let pass = if tool == "pg_restore" {
                "case \" $* \" in *\" --file=/dev/null \"*) exec \"$REAL\" \"$@\";; esac\n"
            } else {
                ""
            };
            std::fs::write(
                &path,
                format!("#!/bin/bash\nREAL={}\n{pass}{}\n", real.display(), body),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            std::os::unix::fs::symlink(pg_bin(tool), &path).unwrap();
        }
    }
    dir
}

/// A TCP proxy to `target` (host:port) on loopback that forwards until
/// `budget` bytes have gone upstream in total, then cuts every connection
/// and drops new ones at once: an S3 endpoint that dies mid-upload.
pub fn cutting_proxy(target: String, budget: u64) -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    let sent = AtomicU64::new(0);
    proxy(target, move |chunk| {
        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst) + chunk.len() as u64 <= budget
    })
}

/// A loopback TCP proxy to `target` that cuts a connection (both ways)
/// as soon as `pass` refuses a chunk the client sent. Faults by real means:
/// the client sees a reset connection, as with a flaky network or store.
pub fn proxy(target: String, pass: impl Fn(&[u8]) -> bool + Send + Sync + 'static) -> u16 {
    fault_proxy(
        target,
        move |c| if pass(c) { Fault::Pass } else { Fault::Cut },
    )
}

/// What a [`fault_proxy`] does with a chunk the client sent.
pub enum Fault {
    Pass,
    /// Reset the connection (both ways): a flaky network, a dying store.
    Cut,
    /// Answer `503 SlowDown` as S3 does under load, and close.
    SlowDown,
    /// Forward these bytes instead of the chunk: a request altered on the
    /// way (a store or gateway that loses part of what it was told).
    Replace(Vec<u8>),
}

/// A loopback TCP proxy to `target` that applies `decide` to every chunk
/// the client sends: forward it, cut the connection, or answer 503 SlowDown.
pub fn fault_proxy(target: String, decide: impl Fn(&[u8]) -> Fault + Send + Sync + 'static) -> u16 {
    use std::sync::Arc;
    let pass = Arc::new(decide);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let pass = pass.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut ur, mut uw) = upstream.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = cr.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return false;
                            }
                            let sent = match pass(&buf[..n]) {
                                Fault::Pass => uw.write_all(&buf[..n]).await,
                                Fault::Cut => return false,
                                Fault::SlowDown => return true,
                                Fault::Replace(bytes) => uw.write_all(&bytes).await,
                            };
                            if sent.is_err() {
                                return false;
                            }
                        }
                    };
                    let slow_down = {
                        let down = tokio::io::copy(&mut ur, &mut cw);
                        tokio::select! {
                            s = up => s,
                            _ = down => false,
                        }
                    };
                    if slow_down {
                        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                        let resp = format!("HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                        let _ = cw.write_all(resp.as_bytes()).await;
                        let _ = cw.shutdown().await;
                    }
                });
            }
        });
    });
    rx.recv().unwrap()
}

/// Wait until `path` exists (a wrapper script's "I got this far" marker).
#[track_caller]
pub fn wait_for_path(path: &Path, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `drctl daemon` as a child, its log in the world's directory.
pub struct Daemon {
    pub child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    pub fn start(w: &World) -> Daemon {
        Daemon::start_via(w, &[])
    }

    /// The daemon through a command prefix (see [`World::command_via`]).
    pub fn start_via(w: &World, prefix: &[&str]) -> Daemon {
        let log = w.dir.join(format!("daemon-{}.log", unique("d")));
        let f = std::fs::File::create(&log).unwrap();
        let child = w
            .command_via(prefix, &["daemon"])
            .stderr(Stdio::from(f))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `[http] listen` port of a world's config.
/// Wait until something listens on the loopback `port` (a daemon's endpoint).
pub fn wait_for_endpoint(port: u16) {
    wait_until(Duration::from_secs(20), "the endpoint", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

pub fn http_port(w: &World) -> u16 {
    let text = std::fs::read_to_string(&w.config).unwrap();
    let at = text.find("127.0.0.1:").unwrap() + "127.0.0.1:".len();
    text[at..].split('"').next().unwrap().parse().unwrap()
}

/// GET over plain HTTP/1.1 with std only: (status code, body).
/// [`http_get`], or None while nothing answers on `port`.
pub fn http_get_opt(port: u16, path: &str) -> Option<(u16, String)> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    Some(http_get(port, path))
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_get_with(port, path, "")
}

/// [`http_get`] with extra request header lines (each ending in `\r\n`).
pub fn http_get_with(port: u16, path: &str, headers: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let code = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// moto's S3 server (`pip install "moto[server]"`), a second, independent
/// S3 implementation with Object Lock and ListMultipartUploads, on a free
/// loopback port; stopped on drop.
pub struct Moto {
    pub endpoint: String,
    child: Child,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (pip install \"moto[server]\"; .ci/run installs it)");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_until(Duration::from_secs(30), "moto_server to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Moto { endpoint, child }
    }

    pub async fn client(&self) -> aws_sdk_s3::Client {
        s3_client(&self.endpoint)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------- shared by feature tests

/// `drctl run JOB --json`: exit code, parsed report, stderr.
pub fn run_json(w: &World, job: &str) -> (i32, serde_json::Value, String) {
    let r = w.drctl(&["run", job, "--json"]);
    let v = serde_json::from_str(&r.stdout).unwrap_or(serde_json::Value::Null);
    (r.code, v, r.stderr)
}

/// `drctl config check` on `body` must fail with exit 2; its stderr.
pub fn config_error(body: &str) -> String {
    let r = World::new(body).drctl(&["config", "check"]);
    assert_eq!(r.code, 2, "{}", r.all());
    r.stderr
}

pub fn finding<'a>(v: &'a serde_json::Value, subject_part: &str) -> &'a serde_json::Value {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"].as_str().unwrap().contains(subject_part))
        .unwrap_or_else(|| panic!("no finding about {subject_part} in {v:#}"))
}

pub fn active_alerts(w: &World) -> Vec<String> {
    let r = w.drctl(&["alerts", "--json"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_owned())
        .collect()
}

/// A local repository and one files job `job` (extra keys `extra`) over a
/// scratch directory holding `a.conf`; returns the world and the directory.
pub fn files_world(job: &str, extra: &str) -> (World, PathBuf) {
    let src = scratch_dir("drctl-files-src-");
    std::fs::write(src.join("a.conf"), "x=1\n").unwrap();
    let w = World::new(&format!(
        "[repositories.local]\ntype = \"local\"\npath = \"{{dir}}/repo\"\n[jobs.{job}]\ntype = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\n{extra}",
        src.display()
    ));
    (w, src)
}

pub fn manifest(w: &World, job: &str, id: &str) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(w.repo_dir().join(job).join(id).join("manifest.json")).unwrap(),
    )
    .unwrap()
}

/// A file of `bytes` bytes at `path`, last modified `days_old` days ago.
pub fn file_at(path: &Path, bytes: usize, days_old: f64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![b'x'; bytes]).unwrap();
    let t = std::time::SystemTime::now() - Duration::from_secs_f64(days_old * 86400.0);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// Dead tuples of `table` as the statistics collector sees them now.
pub fn dead_tuples(pg: &Pg, db: &str, table: &str) -> i64 {
    pg.psql(
        db,
        &format!("SELECT pg_stat_clear_snapshot(); SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = '{table}'"),
    )
    .lines()
    .last()
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// redis-server on a free loopback port (no persistence unless `extra`
/// asks for it), killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start(extra: &[&str]) -> Redis {
        let port = free_port();
        let p = port.to_string();
        // Its own directory: a snapshot for a replica (drctl's SYNC) is
        // written there, and a server started in the crate would load it.
        let dir = scratch_dir("drctl-redis-").display().to_string();
        let mut args = vec![
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
        ];
        args.extend_from_slice(extra);
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        wait_until(Duration::from_secs(20), "redis to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A drctl process stopped at a fault point (`DRCTL_FAULT_PAUSE`), its
/// stderr in a file.
pub struct Paused {
    pub child: Child,
    pub log: PathBuf,
}

impl Paused {
    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL it and reap it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

/// Run `drctl ARGS` of `w` until it reaches fault point `point`, where it
/// waits (60 s at most, else the test fails with its output).
pub fn paused_at(w: &World, point: &str, args: &[&str]) -> Paused {
    let log = w.dir.join(format!("{}.log", unique("fault")));
    let mut child = w
        .command(args)
        .env("DRCTL_FAULT_PAUSE", point)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let needle = format!("fault point {point} reached");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(&needle)
    {
        let done = child.try_wait().unwrap();
        assert!(
            done.is_none() && std::time::Instant::now() < deadline,
            "{point} never reached ({done:?}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Paused { child, log }
}
