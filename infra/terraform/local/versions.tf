terraform {
  required_version = ">= 1.11.0"

  required_providers {
    kafka = {
      source  = "Mongey/kafka"
      version = "= 0.13.1"
    }
  }

  # the state path is given at init (-backend-config=path=...): provision.sh keeps it in the
  # stack's run folder, beside the broker data it describes, never in the repository
  backend "local" {}
}
