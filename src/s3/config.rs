//! Where the object store is and who we are to it, found the way aws-cli and rclone users
//! expect (SPEC §9): flags first, then `AWS_*` environment variables, then the profile's
//! `~/.aws/credentials` and `~/.aws/config`.
//!
//! * Profile: `--profile`, else `AWS_PROFILE`, else `default`.
//! * Keys: with `--profile`, that profile's; otherwise `AWS_ACCESS_KEY_ID` and
//!   `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) when set, else the profile's
//!   `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`, from the
//!   credentials file (`AWS_SHARED_CREDENTIALS_FILE`), then the config file
//!   (`AWS_CONFIG_FILE`, sections `[profile NAME]` and `[default]`).
//! * Region: `--region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, else
//!   `us-east-1`.
//! * Endpoint: `--endpoint`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the profile's
//!   `endpoint_url`, else AWS's `https://s3.REGION.amazonaws.com`. A custom endpoint is
//!   addressed path-style (`ENDPOINT/BUCKET/KEY`: MinIO, Garage, Ceph, R2, B2 all take it)
//!   unless the profile says `addressing_style = virtual`.
//!
//! The secret key and the session token are never printed: [`Secret`] has no `Display` and
//! its `Debug` hides the value.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What the command line says about the store; each overrides the environment and files.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--endpoint URL`.
    pub endpoint: Option<String>,
    /// `--region R`.
    pub region: Option<String>,
    /// `--profile P`.
    pub profile: Option<String>,
}

/// A value that must never reach output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Access keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `AWS_ACCESS_KEY_ID`: not secret (it names the key), shown in no message all the same.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Secret,
    /// `AWS_SESSION_TOKEN`, for temporary credentials.
    pub session_token: Option<Secret>,
    /// Where they were found, for messages (`environment`, `~/.aws/credentials [default]`).
    pub source: String,
}

/// Where and as whom to talk to the store.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of the S3 API, without the bucket (path-style) or with it (virtual-host).
    pub endpoint: String,
    /// Signing region.
    pub region: String,
    /// `ENDPOINT/BUCKET/KEY` rather than `BUCKET.ENDPOINT/KEY`.
    pub path_style: bool,
    /// The keys; `None`: requests are not signed (a public bucket).
    pub keys: Option<Keys>,
    /// The profile whose files were read.
    pub profile: String,
    /// Files that were looked in for the profile, for messages.
    pub files: Vec<PathBuf>,
}

/// One profile's keys and values from the AWS files.
#[derive(Debug, Default)]
struct Profile {
    values: Vec<(String, String)>,
}

impl Profile {
    fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Reads section `section` of the INI file `path` (none when the file is missing).
fn read_section(path: &Path, section: &str) -> Result<Option<Profile>> {
    if !path.exists() {
        return Ok(None);
    }
    // No escapes: a secret may hold a backslash.
    let ini = ini::Ini::load_from_file_noescape(path).map_err(|e| match e {
        ini::Error::Io(e) => Error::io(path, e),
        ini::Error::Parse(e) => {
            Error::Usage(format!("{}: not an AWS config file: {e}", path.display()))
        }
    })?;
    Ok(ini.section(Some(section)).map(|props| Profile {
        values: props
            .iter()
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect(),
    }))
}

impl Settings {
    /// Resolves the settings from `options`, the environment `env` and the AWS files
    /// under `home` (or where the environment says).
    pub fn resolve(
        options: &Options,
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Result<Settings> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let explicit_profile = options.profile.clone();
        let profile = explicit_profile
            .clone()
            .or_else(|| var("AWS_PROFILE"))
            .unwrap_or_else(|| "default".into());
        let aws_file = |var_name: &str, name: &str| -> Option<PathBuf> {
            var(var_name)
                .map(PathBuf::from)
                .or_else(|| home.map(|h| h.join(".aws").join(name)))
        };
        let credentials_file = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
        let config_file = aws_file("AWS_CONFIG_FILE", "config");
        let from_credentials = match &credentials_file {
            Some(path) => read_section(path, &profile)?,
            None => None,
        };
        let config_section = if profile == "default" {
            "default".to_string()
        } else {
            format!("profile {profile}")
        };
        let from_config = match &config_file {
            Some(path) => read_section(path, &config_section)?,
            None => None,
        };
        // A profile asked for by name (--profile, or AWS_PROFILE other than `default`) must
        // exist, as aws-cli's "config profile could not be found".
        let named = if explicit_profile.is_some() {
            Some("--profile")
        } else if var("AWS_PROFILE").is_some_and(|p| p != "default") {
            Some("AWS_PROFILE")
        } else {
            None
        };
        if let Some(named) = named
            && from_credentials.is_none()
            && from_config.is_none()
        {
            let looked: Vec<String> = [&credentials_file, &config_file]
                .into_iter()
                .flatten()
                .map(|p| p.display().to_string())
                .collect();
            return Err(Error::Usage(format!(
                "{named} {profile}: no such profile in {}",
                if looked.is_empty() {
                    "~/.aws (HOME is not set)".to_string()
                } else {
                    looked.join(" or ")
                }
            )));
        }
        let profile_value = |key: &str| -> Option<String> {
            from_credentials
                .as_ref()
                .and_then(|p| p.get(key))
                .or_else(|| from_config.as_ref().and_then(|p| p.get(key)))
                .map(str::to_string)
        };
        let env_keys = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) if explicit_profile.is_none() => Some(Keys {
                access_key_id: id,
                secret_access_key: Secret::new(secret),
                session_token: var("AWS_SESSION_TOKEN").map(Secret::new),
                source: "the environment (AWS_ACCESS_KEY_ID)".into(),
            }),
            _ => None,
        };
        let keys = match env_keys {
            Some(keys) => Some(keys),
            None => match (
                profile_value("aws_access_key_id"),
                profile_value("aws_secret_access_key"),
            ) {
                (Some(id), Some(secret)) => Some(Keys {
                    access_key_id: id,
                    secret_access_key: Secret::new(secret),
                    session_token: profile_value("aws_session_token").map(Secret::new),
                    source: format!("profile {profile}"),
                }),
                (Some(_), None) | (None, Some(_)) => {
                    return Err(Error::Usage(format!(
                        "profile {profile}: aws_access_key_id and aws_secret_access_key go \
                         together; one of them is missing"
                    )));
                }
                (None, None) => {
                    let unsupported = [
                        "credential_process",
                        "sso_session",
                        "sso_start_url",
                        "role_arn",
                        "web_identity_token_file",
                    ]
                    .into_iter()
                    .find(|k| profile_value(k).is_some());
                    if let Some(what) = unsupported {
                        return Err(Error::Usage(format!(
                            "profile {profile} gets its keys through {what}, which tartape does \
                             not run; export AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and \
                             AWS_SESSION_TOKEN) instead, e.g. with `aws configure \
                             export-credentials --format env`"
                        )));
                    }
                    None
                }
            },
        };
        let region = options
            .region
            .clone()
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| profile_value("region"))
            .unwrap_or_else(|| "us-east-1".into());
        let custom = options
            .endpoint
            .clone()
            .or_else(|| var("AWS_ENDPOINT_URL_S3"))
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .or_else(|| profile_value("endpoint_url"));
        let addressing = profile_value("addressing_style");
        let (endpoint, path_style) = match custom {
            Some(url) => {
                let url = url.trim_end_matches('/').to_string();
                check_endpoint(&url)?;
                (url, addressing.as_deref() != Some("virtual"))
            }
            None => (
                format!("https://s3.{region}.amazonaws.com"),
                addressing.as_deref() == Some("path"),
            ),
        };
        Ok(Settings {
            endpoint,
            region,
            path_style,
            keys,
            profile,
            files: [credentials_file, config_file]
                .into_iter()
                .flatten()
                .collect(),
        })
    }

    /// Resolves from the process's environment and `$HOME`.
    pub fn from_env(options: &Options) -> Result<Settings> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Settings::resolve(options, &|name| std::env::var(name).ok(), home.as_deref())
    }

    /// The keys, or an error that says where they were looked for.
    pub fn require_keys(&self) -> Result<&Keys> {
        self.keys.as_ref().ok_or_else(|| {
            Error::Usage(format!(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add \
                 aws_access_key_id and aws_secret_access_key to profile {} ({})",
                self.profile,
                self.files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }
}

/// An endpoint is an `http://` or `https://` URL with a host.
fn check_endpoint(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(Error::Usage(format!(
            "endpoint {url:?}: not an http:// or https:// URL (e.g. http://127.0.0.1:9000 or \
             https://ACCOUNT.r2.cloudflarestorage.com)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(options: Options, env: &[(&str, &str)], files: &[(&str, &str)]) -> Result<Settings> {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        for (name, text) in files {
            std::fs::write(home.path().join(".aws").join(name), text).unwrap();
        }
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(&options, &|k| env.get(k).cloned(), Some(home.path()))
    }

    const CREDENTIALS: &str = "[default]\naws_access_key_id = AKDEFAULT\n\
        aws_secret_access_key = s3cr\\et;#x\n\n[work]\naws_access_key_id=AKWORK\n\
        aws_secret_access_key=SKWORK\naws_session_token=TOKWORK\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\n\n[profile minio]\n\
        aws_access_key_id = AKMINIO\naws_secret_access_key = SKMINIO\n\
        endpoint_url = http://127.0.0.1:9000/\nregion = garage\n\n\
        [profile sso]\nsso_session = corp\n";

    #[test]
    fn environment_then_profile_files_as_aws_cli_reads_them() {
        let files = [("credentials", CREDENTIALS), ("config", CONFIG)];
        // Default profile from the files; the secret is kept byte for byte.
        let s = resolve(Options::default(), &[], &files).unwrap();
        let keys = s.keys.unwrap();
        assert_eq!(keys.access_key_id, "AKDEFAULT");
        assert_eq!(keys.secret_access_key.expose(), "s3cr\\et;#x");
        assert_eq!(s.region, "eu-west-1");
        assert_eq!(s.endpoint, "https://s3.eu-west-1.amazonaws.com");
        assert!(!s.path_style);
        // The environment's keys win over the default profile's.
        let env = [
            ("AWS_ACCESS_KEY_ID", "AKENV"),
            ("AWS_SECRET_ACCESS_KEY", "SKENV"),
            ("AWS_SESSION_TOKEN", "TOKENV"),
            ("AWS_DEFAULT_REGION", "ap-south-1"),
        ];
        let s = resolve(Options::default(), &env, &files).unwrap();
        let keys = s.keys.unwrap();
        assert_eq!(keys.access_key_id, "AKENV");
        assert_eq!(keys.session_token.unwrap().expose(), "TOKENV");
        assert_eq!(s.region, "ap-south-1");
        // --profile wins over the environment's keys; AWS_PROFILE picks a profile too.
        let with = |p: &str| Options {
            profile: Some(p.into()),
            ..Options::default()
        };
        let s = resolve(with("work"), &env, &files).unwrap();
        assert_eq!(s.keys.as_ref().unwrap().access_key_id, "AKWORK");
        assert_eq!(s.keys.unwrap().session_token.unwrap().expose(), "TOKWORK");
        let s = resolve(Options::default(), &[("AWS_PROFILE", "minio")], &files).unwrap();
        let keys = s.keys.unwrap();
        assert_eq!(keys.access_key_id, "AKMINIO");
        // A custom endpoint: path-style, its trailing slash dropped, the profile's region.
        assert_eq!(s.endpoint, "http://127.0.0.1:9000");
        assert!(s.path_style);
        assert_eq!(s.region, "garage");
        // Flags win over everything; AWS_ENDPOINT_URL_S3 over AWS_ENDPOINT_URL.
        let env2 = [
            ("AWS_ENDPOINT_URL", "http://a:1"),
            ("AWS_ENDPOINT_URL_S3", "http://b:2"),
        ];
        let s = resolve(Options::default(), &env2, &files).unwrap();
        assert_eq!(s.endpoint, "http://b:2");
        let flags = Options {
            endpoint: Some("https://c.example".into()),
            region: Some("auto".into()),
            profile: Some("minio".into()),
        };
        let s = resolve(flags, &env2, &files).unwrap();
        assert_eq!(
            (s.endpoint.as_str(), s.region.as_str()),
            ("https://c.example", "auto")
        );
    }

    #[test]
    fn missing_or_unusable_credentials_say_so() {
        let files = [("credentials", CREDENTIALS), ("config", CONFIG)];
        let err = resolve(
            Options {
                profile: Some("nope".into()),
                ..Options::default()
            },
            &[],
            &files,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("--profile nope: no such profile"),
            "{err}"
        );
        // AWS_PROFILE naming a profile that is nowhere: said, even with keys in the
        // environment (aws-cli's ProfileNotFound); `default` may be missing.
        let env = [
            ("AWS_PROFILE", "nope"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ];
        let err = resolve(Options::default(), &env, &files).unwrap_err();
        assert!(
            err.to_string()
                .contains("AWS_PROFILE nope: no such profile"),
            "{err}"
        );
        let s = resolve(Options::default(), &[("AWS_PROFILE", "default")], &[]).unwrap();
        assert!(s.keys.is_none());
        let err = resolve(Options::default(), &[("AWS_PROFILE", "sso")], &files).unwrap_err();
        assert!(err.to_string().contains("sso_session"), "{err}");
        let s = resolve(Options::default(), &[], &[]).unwrap();
        assert!(s.keys.is_none());
        let err = s.require_keys().unwrap_err().to_string();
        assert!(
            err.contains("AWS_ACCESS_KEY_ID") && err.contains(".aws/credentials"),
            "{err}"
        );
        let bad = Options {
            endpoint: Some("s3.example.com".into()),
            ..Options::default()
        };
        assert!(
            resolve(bad, &[], &[])
                .unwrap_err()
                .to_string()
                .contains("not an http")
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let files = [("credentials", CREDENTIALS)];
        let s = resolve(Options::default(), &[], &files).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(shown.contains("Secret(…)"), "{shown}");
    }
}
