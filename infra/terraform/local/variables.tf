# --- connection (provision.sh sets these from the broker's credentials folder) ----------

variable "bootstrap_servers" {
  description = "Bootstrap servers of the broker (host:port, SASL_SSL listener)."
  type        = list(string)
  default     = ["127.0.0.1:9092"]

  validation {
    condition     = length(var.bootstrap_servers) > 0 && alltrue([for s in var.bootstrap_servers : can(regex("^[^:]+:[0-9]+$", s))])
    error_message = "bootstrap_servers must be a non-empty list of host:port."
  }
}

variable "ca_cert_file" {
  description = "CA certificate (PEM file path) that signed the broker's certificate: <kafka dir>/credentials/ca.pem."
  type        = string

  validation {
    condition     = length(trimspace(var.ca_cert_file)) > 0
    error_message = "ca_cert_file must name the broker's CA certificate (credentials/ca.pem)."
  }
}

variable "admin_username" {
  description = "Super user that provisions (the broker's super.users)."
  type        = string
  default     = "admin"
}

variable "admin_password" {
  description = "Password of the super user (credentials/admin.password); pass it as TF_VAR_admin_password."
  type        = string
  sensitive   = true
}

variable "kafka_protocol_version" {
  description = "Kafka protocol version the provider's client (sarama) speaks; 4.0.0 works with Kafka 4.2 brokers (2.x breaks the SCRAM user API)."
  type        = string
  default     = "4.0.0"
}

# --- role passwords (provision.sh: credentials/<role>.password) -------------------------

variable "job_password" {
  description = "SCRAM password of the job principal (TF_VAR_job_password)."
  type        = string
  sensitive   = true
}

variable "device_password" {
  description = "SCRAM password of the device principal (TF_VAR_device_password)."
  type        = string
  sensitive   = true
}

variable "owner_password" {
  description = "SCRAM password of the owner principal (TF_VAR_owner_password)."
  type        = string
  sensitive   = true
}

variable "auditor_password" {
  description = "SCRAM password of the auditor principal (TF_VAR_auditor_password)."
  type        = string
  sensitive   = true
}

# --- passed to the module (documented and validated there) ------------------------------

variable "broker_count" {
  description = "See modules/kafka."
  type        = number
  default     = 1
}

variable "replication_factor" {
  description = "See modules/kafka."
  type        = number
  default     = 1
}

variable "min_insync_replicas" {
  description = "See modules/kafka."
  type        = number
  default     = 1
}

variable "topics" {
  description = "See modules/kafka."
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
}

variable "updates_partitions" {
  description = "See modules/kafka (jobs/config/local.toml: topics.partitions)."
  type        = number
  default     = 2
}

variable "updates_retention_ms" {
  description = "See modules/kafka."
  type        = number
  default     = 604800000
}

variable "dlq_retention_ms" {
  description = "See modules/kafka."
  type        = number
  default     = 2592000000
}

variable "control_cleanup_policy" {
  description = "See modules/kafka."
  type        = string
  default     = "compact"
}

variable "models_cleanup_policy" {
  description = "See modules/kafka."
  type        = string
  default     = "compact"
}

variable "updates_max_message_bytes" {
  description = "See modules/kafka."
  type        = number
  default     = 16777216
}

variable "control_max_message_bytes" {
  description = "See modules/kafka."
  type        = number
  default     = 16777216
}

variable "models_max_message_bytes" {
  description = "See modules/kafka."
  type        = number
  default     = 16842752
}

variable "job_group" {
  description = "See modules/kafka (jobs/config/local.toml: kafka.group_id)."
  type        = string
  default     = "fedstream-aggregator"
}

variable "job_transactional_id_prefix" {
  description = "See modules/kafka (jobs/config/local.toml: kafka.transactional_id_prefix)."
  type        = string
  default     = "fedstream-aggregator"
}
