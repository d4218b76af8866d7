# --- placement ----------------------------------------------------------------------------

variable "namespace" {
  description = "Kubernetes namespace of every resource (Strimzi and the Flink operator must watch it)."
  type        = string
  default     = "fedstream"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS-1123 label (lowercase letters, digits, '-', at most 63)."
  }
}

variable "cluster_name" {
  description = "Name of the Strimzi Kafka cluster (the Kafka resource); services are <name>-kafka-bootstrap etc."
  type        = string
  default     = "fedstream"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name must be a DNS-1123 label of at most 40 characters (Strimzi derives longer names from it)."
  }
}

# --- Kafka (Strimzi, KRaft) ---------------------------------------------------------------

variable "kafka_version" {
  description = "Kafka version Strimzi runs (Strimzi 1.2 supports 4.2.x and 4.3.x)."
  type        = string
  default     = "4.2.0"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.kafka_version))
    error_message = "kafka_version must look like 4.2.0."
  }
}

variable "kafka_replicas" {
  description = "Nodes of the KafkaNodePool; every node is KRaft controller and broker (use 3 or 5 for a quorum that survives a failure)."
  type        = number
  default     = 3

  validation {
    condition     = var.kafka_replicas >= 1 && floor(var.kafka_replicas) == var.kafka_replicas
    error_message = "kafka_replicas must be a whole number >= 1."
  }
}

variable "kafka_storage_size" {
  description = "Persistent volume size per Kafka node (Kubernetes quantity, e.g. 100Gi)."
  type        = string
  default     = "100Gi"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$", var.kafka_storage_size))
    error_message = "kafka_storage_size must be a Kubernetes quantity such as 100Gi."
  }
}

variable "kafka_storage_class" {
  description = "StorageClass of the Kafka volumes (null: the cluster's default)."
  type        = string
  default     = null
}

variable "kafka_resources" {
  description = "CPU and memory requests/limits of each Kafka node (Kubernetes quantities)."
  type = object({
    requests = object({ cpu = string, memory = string })
    limits   = object({ cpu = string, memory = string })
  })
  default = {
    requests = { cpu = "1", memory = "4Gi" }
    limits   = { cpu = "2", memory = "4Gi" }
  }
}

# --- topics (the same meaning and defaults as modules/kafka) -------------------------------

variable "topics" {
  description = "Topic names by role (see modules/kafka)."
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
    condition     = alltrue([for name in values(var.topics) : can(regex("^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$", name))])
    error_message = "Topic names must be non-empty lowercase DNS-1123 names (letters, digits, '-', '.'): Strimzi names each KafkaTopic resource after its topic."
  }
  validation {
    condition     = length(distinct(values(var.topics))) == 5
    error_message = "The five topic names must be distinct."
  }
}

variable "replication_factor" {
  description = "Replicas of every fedstream topic (<= kafka_replicas)."
  type        = number
  default     = 3

  validation {
    condition     = var.replication_factor >= 1 && var.replication_factor <= var.kafka_replicas && floor(var.replication_factor) == var.replication_factor
    error_message = "replication_factor must be a whole number between 1 and kafka_replicas."
  }
}

variable "min_insync_replicas" {
  description = "min.insync.replicas of the topics and the broker (<= replication_factor)."
  type        = number
  default     = 2

  validation {
    condition     = var.min_insync_replicas >= 1 && var.min_insync_replicas <= var.replication_factor
    error_message = "min_insync_replicas must be between 1 and replication_factor."
  }
}

variable "updates_partitions" {
  description = "Partitions of the updates topic."
  type        = number
  default     = 6

  validation {
    condition     = var.updates_partitions >= 1 && floor(var.updates_partitions) == var.updates_partitions
    error_message = "updates_partitions must be a whole number >= 1."
  }
}

variable "updates_retention_ms" {
  description = "Retention of the updates topic in ms (-1: forever). Default 7 days."
  type        = number
  default     = 604800000

  validation {
    condition     = var.updates_retention_ms == -1 || var.updates_retention_ms >= 1
    error_message = "updates_retention_ms must be -1 (keep forever) or a positive number of milliseconds."
  }
}

variable "dlq_retention_ms" {
  description = "Retention of the dead-letter topic in ms (-1: forever). Default 30 days."
  type        = number
  default     = 2592000000

  validation {
    condition     = var.dlq_retention_ms == -1 || var.dlq_retention_ms >= 1
    error_message = "dlq_retention_ms must be -1 (keep forever) or a positive number of milliseconds."
  }
}

variable "control_cleanup_policy" {
  description = "cleanup.policy of the control topic (see modules/kafka): compact (default; records are keyed by model id) or delete."
  type        = string
  default     = "compact"

  validation {
    condition     = contains(["delete", "compact"], var.control_cleanup_policy)
    error_message = "control_cleanup_policy must be \"delete\" or \"compact\"."
  }
}

variable "models_cleanup_policy" {
  description = "cleanup.policy of the models topic (see modules/kafka): compact (default; records are keyed by model id) or delete."
  type        = string
  default     = "compact"

  validation {
    condition     = contains(["delete", "compact"], var.models_cleanup_policy)
    error_message = "models_cleanup_policy must be \"delete\" or \"compact\"."
  }
}

variable "max_message_bytes" {
  description = "max.message.bytes of updates, control and models (bytes); the DLQ gets dlq_headroom_bytes more. Also the broker's message.max.bytes."
  type = object({
    updates = number
    control = number
    models  = number
  })
  default = {
    updates = 16777216
    control = 16777216
    models  = 16842752
  }

  validation {
    condition     = alltrue([for v in values(var.max_message_bytes) : v >= 1024 && floor(v) == v])
    error_message = "Every max_message_bytes value must be a whole number >= 1024."
  }
}

variable "dlq_headroom_bytes" {
  description = "Bytes the DLQ allows beyond the larger of the updates and control limits (a dead letter carries the original record)."
  type        = number
  default     = 1048576

  validation {
    condition     = var.dlq_headroom_bytes >= 0 && floor(var.dlq_headroom_bytes) == var.dlq_headroom_bytes
    error_message = "dlq_headroom_bytes must be a whole number >= 0."
  }
}

# --- principals (the same matrix as modules/kafka) ----------------------------------------

variable "usernames" {
  description = "SCRAM user name by role; each becomes a KafkaUser and the Secret Strimzi writes its password to."
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
    condition     = alltrue([for name in values(var.usernames) : can(regex("^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$", name))])
    error_message = "User names must be lowercase DNS-1123 names (they name KafkaUser resources and Secrets)."
  }
  validation {
    condition     = length(distinct(values(var.usernames))) == 4
    error_message = "The four roles need four distinct user names."
  }
}

variable "job_group" {
  description = "The job's consumer group."
  type        = string
  default     = "fedstream-aggregator"

  validation {
    condition     = length(trimspace(var.job_group)) > 0
    error_message = "job_group must not be empty."
  }
}

variable "job_transactional_id_prefix" {
  description = "The job's transactional-id prefix."
  type        = string
  default     = "fedstream-aggregator"

  validation {
    condition     = length(trimspace(var.job_transactional_id_prefix)) > 0
    error_message = "job_transactional_id_prefix must not be empty (an empty prefix would grant every transactional id)."
  }
}

variable "device_group_prefix" {
  description = "Consumer-group prefix for devices."
  type        = string
  default     = "fedstream-device"

  validation {
    condition     = length(trimspace(var.device_group_prefix)) > 0
    error_message = "device_group_prefix must not be empty."
  }
}

variable "auditor_group_prefix" {
  description = "Consumer-group prefix for the auditor."
  type        = string
  default     = "fedstream-auditor"

  validation {
    condition     = length(trimspace(var.auditor_group_prefix)) > 0
    error_message = "auditor_group_prefix must not be empty."
  }
}

# --- the job (Flink Kubernetes Operator, application mode) --------------------------------

variable "job_name" {
  description = "Name of the FlinkDeployment (and of the job's pods)."
  type        = string
  default     = "fedstream-aggregator"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$", var.job_name))
    error_message = "job_name must be a DNS-1123 label starting with a letter, at most 45 characters."
  }
}

variable "job_image" {
  description = "Container image of the job: Flink 2.2.1 with Python 3.11, apache-flink 2.2.1, the project's requirements, the Flink Kafka connector jar, and the repository's schemas/, pipelines/ and jobs/ folders under job_code_dir."
  type        = string

  validation {
    condition     = length(trimspace(var.job_image)) > 0
    error_message = "job_image must name the job's container image."
  }
}

variable "job_code_dir" {
  description = "Folder in the image holding the repository's schemas/, pipelines/ and jobs/ (shipped to the Python workers with -pyfs)."
  type        = string
  default     = "/opt/fedstream"

  validation {
    condition     = startswith(var.job_code_dir, "/")
    error_message = "job_code_dir must be an absolute path inside the image."
  }
}

variable "flink_version" {
  description = "flinkVersion of the FlinkDeployment (v2_2 for Flink 2.2; the operator must be 1.13 or newer)."
  type        = string
  default     = "v2_2"

  validation {
    condition     = can(regex("^v[12]_[0-9]+$", var.flink_version))
    error_message = "flink_version must look like v2_2."
  }
}

variable "flink_python_jar" {
  description = "URI of flink-python in the image (the PyFlink driver)."
  type        = string
  default     = "local:///opt/flink/opt/flink-python-2.2.1.jar"
}

variable "service_account" {
  description = "Service account of the Flink pods (the operator's Helm chart creates \"flink\")."
  type        = string
  default     = "flink"
}

variable "parallelism" {
  description = "Parallelism of the job (at most the updates partitions are read in parallel)."
  type        = number
  default     = 2

  validation {
    condition     = var.parallelism >= 1 && floor(var.parallelism) == var.parallelism
    error_message = "parallelism must be a whole number >= 1."
  }
}

variable "task_slots" {
  description = "Slots per TaskManager (the operator starts ceil(parallelism / task_slots) TaskManagers)."
  type        = number
  default     = 2

  validation {
    condition     = var.task_slots >= 1 && floor(var.task_slots) == var.task_slots
    error_message = "task_slots must be a whole number >= 1."
  }
}

variable "upgrade_mode" {
  description = "How the operator upgrades the job: savepoint (take a savepoint, restart from it) or last-state (restart from the newest checkpoint; needs high availability, configured here). Never stateless: the models are the state."
  type        = string
  default     = "savepoint"

  validation {
    condition     = contains(["savepoint", "last-state"], var.upgrade_mode)
    error_message = "upgrade_mode must be \"savepoint\" or \"last-state\" (stateless would drop every model)."
  }
}

variable "checkpoint_dir" {
  description = "Durable URI for checkpoints, e.g. s3://bucket/fedstream/checkpoints (the image needs the matching Flink filesystem plugin)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9+.-]*://.+", var.checkpoint_dir)) && !startswith(var.checkpoint_dir, "file://")
    error_message = "checkpoint_dir must be a durable URI such as s3://bucket/path (file:// would die with the pod)."
  }
}

variable "savepoint_dir" {
  description = "Durable URI for savepoints (upgrades), e.g. s3://bucket/fedstream/savepoints."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9+.-]*://.+", var.savepoint_dir)) && !startswith(var.savepoint_dir, "file://")
    error_message = "savepoint_dir must be a durable URI such as s3://bucket/path."
  }
}

variable "ha_dir" {
  description = "Durable URI for Kubernetes high-availability metadata (JobManager failover, last-state upgrades)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9+.-]*://.+", var.ha_dir)) && !startswith(var.ha_dir, "file://")
    error_message = "ha_dir must be a durable URI such as s3://bucket/path."
  }
}

variable "checkpoint_interval_ms" {
  description = "Checkpoint interval: a release becomes visible to read_committed readers when its checkpoint completes."
  type        = number
  default     = 5000

  validation {
    condition     = var.checkpoint_interval_ms >= 100
    error_message = "checkpoint_interval_ms must be >= 100."
  }
}

variable "state_backend" {
  description = "Flink state backend: hashmap or rocksdb."
  type        = string
  default     = "rocksdb"

  validation {
    condition     = contains(["hashmap", "rocksdb"], var.state_backend)
    error_message = "state_backend must be \"hashmap\" or \"rocksdb\"."
  }
}

variable "restart_attempts" {
  description = "Fixed-delay restart strategy: attempts before the job fails (then the operator reports it)."
  type        = number
  default     = 10

  validation {
    condition     = var.restart_attempts >= 0 && floor(var.restart_attempts) == var.restart_attempts
    error_message = "restart_attempts must be a whole number >= 0."
  }
}

variable "restart_delay_ms" {
  description = "Fixed-delay restart strategy: pause between attempts."
  type        = number
  default     = 10000

  validation {
    condition     = var.restart_delay_ms >= 0
    error_message = "restart_delay_ms must be >= 0."
  }
}

variable "jobmanager_resources" {
  description = "JobManager CPU (cores) and memory (Flink size, e.g. 2048m)."
  type        = object({ cpu = number, memory = string })
  default     = { cpu = 1, memory = "2048m" }

  validation {
    condition     = var.jobmanager_resources.cpu > 0 && can(regex("^[0-9]+[mg]$", var.jobmanager_resources.memory))
    error_message = "jobmanager_resources needs cpu > 0 and memory like 2048m or 2g."
  }
}

variable "taskmanager_resources" {
  description = "TaskManager CPU (cores) and memory (Flink size; the embedded Python workers live in it)."
  type        = object({ cpu = number, memory = string })
  default     = { cpu = 2, memory = "4096m" }

  validation {
    condition     = var.taskmanager_resources.cpu > 0 && can(regex("^[0-9]+[mg]$", var.taskmanager_resources.memory))
    error_message = "taskmanager_resources needs cpu > 0 and memory like 4096m or 4g."
  }
}

variable "job_config_file" {
  description = "The job's TOML configuration inside the image; everything cluster-specific is overridden with --set."
  type        = string
  default     = "/opt/fedstream/jobs/config/local.toml"
}

variable "extra_job_settings" {
  description = "More job configuration overrides (section.key => value), passed as --set section.key=value."
  type        = map(string)
  default     = {}
}
