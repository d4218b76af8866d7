# Every value the module needs. Sizes and retentions are in bytes and milliseconds, as Kafka
# takes them; the defaults match jobs/config/local.toml and fedstream.jobs.topics.

# --- cluster ------------------------------------------------------------------------------

variable "broker_count" {
  description = "Number of brokers in the cluster; the replication factor cannot exceed it."
  type        = number
  default     = 1

  validation {
    condition     = var.broker_count >= 1 && floor(var.broker_count) == var.broker_count
    error_message = "broker_count must be a whole number >= 1."
  }
}

variable "replication_factor" {
  description = "Replicas of every fedstream topic (1 for the one-node local broker, 3 in production)."
  type        = number
  default     = 1

  validation {
    condition     = var.replication_factor >= 1 && floor(var.replication_factor) == var.replication_factor
    error_message = "replication_factor must be a whole number >= 1."
  }
  validation {
    condition     = var.replication_factor <= var.broker_count
    error_message = "replication_factor cannot exceed broker_count: a topic cannot have more replicas than there are brokers."
  }
}

variable "min_insync_replicas" {
  description = "min.insync.replicas of every topic: replicas that must acknowledge an acks=all write (1 <= value <= replication_factor; use replication_factor - 1 in production)."
  type        = number
  default     = 1

  validation {
    condition     = var.min_insync_replicas >= 1 && var.min_insync_replicas <= var.replication_factor
    error_message = "min_insync_replicas must be between 1 and replication_factor."
  }
}

# --- topics -------------------------------------------------------------------------------

variable "topics" {
  description = "Topic names by role: updates (device -> job), control (registrations, owner -> job), models (releases, job -> devices), dlq (dead letters, job -> auditor). Must match the job's [topics] configuration."
  type = object({
    updates = string
    control = string
    models  = string
    dlq     = string
    devices = optional(string, "fl.devices")
  })
  default = {
    updates = "fl.updates"
    control = "fl.control"
    models  = "fl.models"
    dlq     = "fl.dlq"
    devices = "fl.devices"
  }

  validation {
    condition = alltrue([
      for name in values(var.topics) : can(regex("^[A-Za-z0-9._-]{1,249}$", name)) && name != "." && name != ".."
    ])
    error_message = "Every topic name must be non-empty, at most 249 characters of [A-Za-z0-9._-], and not \".\" or \"..\"."
  }
  validation {
    condition     = length(distinct(values(var.topics))) == 5
    error_message = "The five topic names must be distinct."
  }
}

variable "updates_partitions" {
  description = "Partitions of the updates topic (device throughput scales with it; the job's source parallelism can use up to this many). The other three topics have one partition, so every reader sees a model's records in order."
  type        = number
  default     = 2

  validation {
    condition     = var.updates_partitions >= 1 && floor(var.updates_partitions) == var.updates_partitions
    error_message = "updates_partitions must be a whole number >= 1."
  }
}

variable "updates_retention_ms" {
  description = "How long the updates topic keeps records, in ms (-1: forever). Updates older than the job's last checkpoint are no longer needed; keep enough to replay after an outage. Default 7 days."
  type        = number
  default     = 604800000

  validation {
    condition     = var.updates_retention_ms == -1 || var.updates_retention_ms >= 1
    error_message = "updates_retention_ms must be -1 (keep forever) or a positive number of milliseconds."
  }
}

variable "dlq_retention_ms" {
  description = "How long the dead-letter topic keeps records, in ms (-1: forever). Default 30 days."
  type        = number
  default     = 2592000000

  validation {
    condition     = var.dlq_retention_ms == -1 || var.dlq_retention_ms >= 1
    error_message = "dlq_retention_ms must be -1 (keep forever) or a positive number of milliseconds."
  }
}

variable "control_cleanup_policy" {
  description = "cleanup.policy of the control topic (retention.ms = -1). \"compact\" (default): registrations are keyed by model id, so each model's registration stays forever and a re-sent one replaces its copy; Kafka then refuses unkeyed records. \"delete\" keeps every record."
  type        = string
  default     = "compact"

  validation {
    condition     = contains(["delete", "compact"], var.control_cleanup_policy)
    error_message = "control_cleanup_policy must be \"delete\" or \"compact\"."
  }
}

variable "models_cleanup_policy" {
  description = "cleanup.policy of the models topic (retention.ms = -1). \"compact\" (default): each release chunk is keyed <model_id>#<chunk_index> (partitioned by model id), so every model's newest complete release stays forever and older ones are compacted away. \"delete\" keeps every release."
  type        = string
  default     = "compact"

  validation {
    condition     = contains(["delete", "compact"], var.models_cleanup_policy)
    error_message = "models_cleanup_policy must be \"delete\" or \"compact\"."
  }
}

variable "updates_max_message_bytes" {
  description = "max.message.bytes of the updates topic: the largest update record (a 1M-parameter fp32 delta is about 4 MB). Match the job's topics.updates_max_message_bytes."
  type        = number
  default     = 16777216

  validation {
    condition     = var.updates_max_message_bytes >= 1024 && floor(var.updates_max_message_bytes) == var.updates_max_message_bytes
    error_message = "updates_max_message_bytes must be a whole number >= 1024."
  }
}

variable "control_max_message_bytes" {
  description = "max.message.bytes of the control topic: the largest registration (ONNX template + initial weights)."
  type        = number
  default     = 16777216

  validation {
    condition     = var.control_max_message_bytes >= 1024 && floor(var.control_max_message_bytes) == var.control_max_message_bytes
    error_message = "control_max_message_bytes must be a whole number >= 1024."
  }
}

variable "models_max_message_bytes" {
  description = "max.message.bytes of the models topic: the job's topics.models_max_message_bytes (the largest release chunk) plus record overhead. Default 16 MiB + 64 KiB."
  type        = number
  default     = 16842752

  validation {
    condition     = var.models_max_message_bytes >= 1024 && floor(var.models_max_message_bytes) == var.models_max_message_bytes
    error_message = "models_max_message_bytes must be a whole number >= 1024."
  }
}

variable "dlq_headroom_bytes" {
  description = "Bytes the dead-letter topic allows beyond the larger of the updates and control limits, so that a dead letter carrying a whole original record (plus reason, topic, partition, offset) always fits. Default 1 MiB."
  type        = number
  default     = 1048576

  validation {
    condition     = var.dlq_headroom_bytes >= 0 && floor(var.dlq_headroom_bytes) == var.dlq_headroom_bytes
    error_message = "dlq_headroom_bytes must be a whole number >= 0."
  }
}

# --- principals ---------------------------------------------------------------------------

variable "usernames" {
  description = "SCRAM user name of each role (the ACL principal is User:<name>). Roles: job (the Flink job), device (every device of the fleet), owner (registers models), auditor (reads everything, writes nothing)."
  type = object({
    job     = string
    device  = string
    owner   = string
    auditor = string
  })
  default = {
    job     = "job"
    device  = "device"
    owner   = "owner"
    auditor = "auditor"
  }

  validation {
    condition     = alltrue([for name in values(var.usernames) : length(trimspace(name)) > 0 && name == trimspace(name)])
    error_message = "Every user name must be non-empty, without leading or trailing spaces."
  }
  validation {
    condition     = length(distinct(values(var.usernames))) == 4
    error_message = "The four roles need four distinct user names (one principal per role)."
  }
}

variable "passwords" {
  description = "SCRAM-SHA-512 password of each role: {job, device, owner, auditor}. Pass them through TF_VAR_* environment variables or a secrets manager, never on the command line; they are write-only arguments and are kept out of the plan and the state."
  type = object({
    job     = string
    device  = string
    owner   = string
    auditor = string
  })
  sensitive = true
  # no default: the module never invents a password

  validation {
    condition     = alltrue([for p in values(var.passwords) : length(p) >= 16])
    error_message = "Every role password must be at least 16 characters (provision.sh generates 48 random hex characters)."
  }
}

variable "scram_iterations" {
  description = "PBKDF2 iterations of the stored SCRAM-SHA-512 credentials (Kafka's minimum is 4096)."
  type        = number
  default     = 8192

  validation {
    condition     = var.scram_iterations >= 4096 && var.scram_iterations <= 16384
    error_message = "scram_iterations must be between 4096 and 16384 (Kafka's limits)."
  }
}

variable "job_group" {
  description = "Consumer group of the job (its KafkaSource group.id, jobs/config: kafka.group_id)."
  type        = string
  default     = "fedstream-aggregator"

  validation {
    condition     = length(trimspace(var.job_group)) > 0
    error_message = "job_group must not be empty."
  }
}

variable "job_transactional_id_prefix" {
  description = "Transactional-id prefix of the job's exactly-once sinks (jobs/config: kafka.transactional_id_prefix); the job may use every transactional id that starts with it."
  type        = string
  default     = "fedstream-aggregator"

  validation {
    condition     = length(trimspace(var.job_transactional_id_prefix)) > 0
    error_message = "job_transactional_id_prefix must not be empty (an empty prefix would grant every transactional id)."
  }
}

variable "device_group_prefix" {
  description = "Consumer groups the device principal may use (prefix). The SDK reads releases without a group today; the grant lets a device commit offsets under its own group, e.g. fedstream-device-<id>."
  type        = string
  default     = "fedstream-device"

  validation {
    condition     = length(trimspace(var.device_group_prefix)) > 0
    error_message = "device_group_prefix must not be empty (an empty prefix would grant every group)."
  }
}

variable "auditor_group_prefix" {
  description = "Consumer groups the auditor principal may use (prefix)."
  type        = string
  default     = "fedstream-auditor"

  validation {
    condition     = length(trimspace(var.auditor_group_prefix)) > 0
    error_message = "auditor_group_prefix must not be empty (an empty prefix would grant every group)."
  }
}

variable "acl_host" {
  description = "Host the ACLs allow connections from (\"*\": any)."
  type        = string
  default     = "*"

  validation {
    condition     = length(trimspace(var.acl_host)) > 0
    error_message = "acl_host must not be empty; use \"*\" for any host."
  }
}
